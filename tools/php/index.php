<?php
require __DIR__ . '/lib.php';
header('Content-Type: text/html; charset=utf-8');
echo '<!DOCTYPE html><html><head><title>Moodle-like PHP node</title></head><body><h1>Moodle-like PHP node ',
    htmlspecialchars(node()), '</h1><p><a href="/login/index.php">Log in</a></p></body></html>', "\n";
