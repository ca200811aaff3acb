<?php
// Example content for `provision website deploy` (examples/demo.sh packs this directory).
$marker = trim(file_get_contents(__DIR__ . '/.release-marker'));
?>
<!doctype html>
<html lang="id">
<head><meta charset="utf-8"><title>Dinas Kesehatan Kota Tarakan</title>
<link rel="stylesheet" href="css/situs.css"></head>
<body>
<h1>Sistem Informasi Kesehatan</h1>
<p>Rilis: <?= htmlspecialchars($marker) ?></p>
<p>PHP <?= PHP_VERSION ?>, disajikan dari <?= htmlspecialchars(basename(__DIR__)) ?></p>
</body>
</html>
