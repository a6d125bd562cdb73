<?php
// GET: the login form (a session is started, as Moodle does). POST username=NAME: a new
// session id for the logged-in user, then 303 to the dashboard.
require __DIR__ . '/../lib.php';
session_start();
if ($_SERVER['REQUEST_METHOD'] === 'POST') {
    $user = $_POST['username'] ?? '';
    if (!is_string($user) || $user === '') {
        text(400, "missing username\n");
    }
    session_regenerate_id(true);
    $_SESSION['user'] = $user;
    redirect('/my/');
}
if ($_SERVER['REQUEST_METHOD'] !== 'GET' && $_SERVER['REQUEST_METHOD'] !== 'HEAD') {
    text(405, "method not allowed\n");
}
header('Content-Type: text/html; charset=utf-8');
echo '<!DOCTYPE html><html><head><title>Moodle: Log in to the site</title></head><body><h1>Moodle</h1><p>Node: ',
    htmlspecialchars(node()),
    '</p><form method="post" action="/login/index.php"><input type="text" name="username">',
    '<input type="password" name="password"><button type="submit">Log in</button></form></body></html>', "\n";
