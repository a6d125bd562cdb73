<?php
// The health page for the checks (tests/tests/health_peak.rs), switched at run time by
// files in MOODLE_DATA: `health-slow-ms` (sleep that long before answering, as an
// overloaded Moodle does), `health-status` (answer that status). `fail-all` (lib.php)
// makes every page, this one included, answer 500.
require __DIR__ . '/lib.php';
$ms = (int) @file_get_contents(data_dir() . '/health-slow-ms');
if ($ms > 0) {
    usleep($ms * 1000);
}
$status = (int) @file_get_contents(data_dir() . '/health-status');
text($status >= 100 ? $status : 200, "Moodle is up\n");
