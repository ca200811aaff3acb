#!/usr/bin/env bash
# The main job on the built-in lab, start to finish:
#   - two example requests (one per office) go through the hosting SOP's
#     human steps; the head's approval provisions each site by itself
#     (plan, apply, verify from outside), then the configuration letter;
#   - the website SOP's installation on the first site: two releases from
#     archives, the list of releases, and a rollback;
#   - a third request is rejected and gets its reply letter (surat balasan);
#   - the two application SOPs run to done with their documents (the KAK as
#     DOCX and PDF, reports, berita acara): examples/demo-applications.sh;
#   - the audit finds no drift, and the usage report is written.
# It starts from a fresh lab and its own state home, so it can run again.
set -euo pipefail
cd "$(dirname "$0")/.."
provision() { .venv/bin/provision "$@"; }
export PROVISIONER_HOME="${PROVISIONER_HOME:-$PWD/var/demo}"

echo "== a fresh lab"
provision lab down >/dev/null
provision lab up
rm -rf "$PROVISIONER_HOME"

review() {  # submit a request and record the SOP's human steps up to the decision
    local file=$1 id
    id=$(sed -n 's/^id: //p' "$file")
    provision request submit "$file" >&2
    provision step "$id" agenda --by bagian_umum --note "Agenda surat masuk" >&2
    provision step "$id" disposisi --by kadis --note "Diteruskan ke Bidang Aplikasi" >&2
    provision step "$id" pengkajian --by bidang_aplikasi --note "Server, IP dan bandwidth tersedia" >&2
    echo "$id"
}

for file in examples/tarakan-simkes.yaml examples/buleleng-sipandu.yaml; do
    id=$(review "$file")
    echo "== $id: the head approves; the hook provisions the site and writes the letter"
    provision decide "$id" --approve --by kadis
    provision request show "$id"
    echo "== $id: a second run changes nothing"
    provision hosting "$id" --apply
done

echo "== a website deploy: examples/website/ packed twice (two releases), then a rollback"
site=simkes.tarakankota.go.id
content="$PROVISIONER_HOME/konten"
mkdir -p "$content/rilis-2"
tar -czf "$content/rilis-1.tar.gz" -C examples/website .
cp -a examples/website/. "$content/rilis-2/"
echo contoh-rilis-2 > "$content/rilis-2/.release-marker"
tar -czf "$content/rilis-2.tar.gz" -C "$content/rilis-2" .
provision website deploy "$site" --source "$content/rilis-1.tar.gz"
provision website deploy "$site" --source "$content/rilis-1.tar.gz" --apply --by bidang_aplikasi
provision website deploy "$site" --source "$content/rilis-2.tar.gz" --apply --by bidang_aplikasi
provision website releases "$site"
provision website rollback "$site"
provision website rollback "$site" --apply --by bidang_aplikasi

id=$(review examples/tarakan-turnamen.yaml)
echo "== $id: the head rejects; the reply letter follows"
provision decide "$id" --reject --by kadis \
    --reason "Aplikasi pendaftaran sudah tersedia di portal layanan Pemerintah Kota Tarakan"

echo "== the records against the live hosts (exit 0: no drift)"
provision audit
echo "== the certificates as served from outside (issuer, expiry, days left)"
provision tls status
echo "== what a daily renewal run would do now (nothing is due)"
provision tls renew
echo "== this month's usage report"
provision report usage

echo "== the two application SOPs and their documents (needs analysis, KAK, reports, berita acara)"
PROVISIONER_HOME="$PWD/var/demo-applications" examples/demo-applications.sh

echo "== results"
provision request list
echo "letters:"
ls -1 "$PROVISIONER_HOME"/letters/*/* 2>/dev/null || ls -1 "$PROVISIONER_HOME"/letters
echo "credentials sheets (RAHASIA, mode 0600):"
ls -l "$PROVISIONER_HOME"/credentials
