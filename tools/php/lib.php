<?php
// A Moodle-like PHP application for the end-to-end tests (tests/tests/php.rs): the same
// pages as the Rust origin (tools/src/origin/), with PHP's own file-based sessions, so
// that the engine is tested in front of a real PHP session handler.
//
// Run one node per folder of sessions, e.g.
//   MOODLE_NODE=s1 MOODLE_DATA=/tmp/s1 php -d session.name=MoodleSession \
//     -d session.save_path=/tmp/s1/sessions -d session.use_strict_mode=1 \
//     -S 127.0.0.1:9101 -t tools/php
//
// MOODLE_NODE names the node (sent as X-Node and shown on the dashboard); MOODLE_DATA is
// the folder where quiz submissions are recorded (submissions.log, one "user<TAB>attempt"
// line each), by default the session folder. Sessions are local to a node: a session id
// issued by one node means nothing to another, as with Moodle's file sessions.

declare(strict_types=1);

function node(): string
{
    $n = getenv('MOODLE_NODE');
    return ($n === false || $n === '') ? php_uname('n') : $n;
}

function data_dir(): string
{
    $d = getenv('MOODLE_DATA');
    if ($d === false || $d === '') {
        $d = (string) ini_get('session.save_path');
    }
    return $d !== '' ? $d : sys_get_temp_dir();
}

function session_user(): ?string
{
    $u = $_SESSION['user'] ?? null;
    return is_string($u) && $u !== '' ? $u : null;
}

function redirect(string $to): never
{
    http_response_code(303);
    header('Location: ' . $to);
    header('Content-Type: text/plain; charset=utf-8');
    echo "see $to\n";
    exit;
}

function text(int $status, string $body): never
{
    http_response_code($status);
    header('Content-Type: text/plain; charset=utf-8');
    echo $body;
    exit;
}

header('X-Node: ' . node());
// A node that answers 500 to everything (the tests switch it with a file).
if (file_exists(data_dir() . '/fail-all')) {
    text(500, "error on " . node() . "\n");
}
