<?php
// The dashboard: 200 "Dashboard of NAME on NODE" with a session of this node, else 303
// to the login page (the login loop, when the session never reaches its node).
require __DIR__ . '/../lib.php';
session_start();
$user = session_user();
if ($user === null) {
    redirect('/login/index.php');
}
text(200, "Dashboard of $user on " . node());
