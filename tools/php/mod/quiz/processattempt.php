<?php
// POST attempt=ID&answer=...: records one submission of the session's user on this node
// (MOODLE_DATA/submissions.log), 200 "submitted NAME attempt ID on NODE"; without a
// session of this node, 303 to the login page; 400 without an attempt.
require __DIR__ . '/../../lib.php';
if ($_SERVER['REQUEST_METHOD'] !== 'POST') {
    text(405, "method not allowed\n");
}
session_start();
$user = session_user();
if ($user === null) {
    redirect('/login/index.php');
}
$attempt = $_POST['attempt'] ?? '';
if (!is_string($attempt) || $attempt === '') {
    text(400, "missing attempt\n");
}
$line = str_replace(["\t", "\n"], ' ', $user) . "\t" . str_replace(["\t", "\n"], ' ', $attempt) . "\n";
if (file_put_contents(data_dir() . '/submissions.log', $line, FILE_APPEND | LOCK_EX) === false) {
    text(500, "could not record the submission\n");
}
text(200, "submitted $user attempt $attempt on " . node());
