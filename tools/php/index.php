<?php
// The home page, which starts no session (the tests' health check probes it). It is sent
// in two parts, as PHP pages that flush their output early are: the headers and the start
// of the page first, the rest (with "Moodle") a moment later, so that a check reading the
// response must look past its first read.
require __DIR__ . '/lib.php';
header('Content-Type: text/html; charset=utf-8');
echo '<!DOCTYPE html><html><head>';
flush();
usleep(20000);
echo '<title>Moodle-like PHP node</title></head><body><h1>Moodle-like PHP node ',
    htmlspecialchars(node()), '</h1><p><a href="/login/index.php">Log in</a></p></body></html>', "\n";
