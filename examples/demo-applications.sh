#!/usr/bin/env bash
# The two application SOPs from submit to done, with the documents they make.
# No lab is needed: these SOPs write documents, they do not touch a server.
#   - konsultasi-aplikasi (DKISP Kota Tarakan): the needs analysis (step 7),
#     the KAK for procurement as DOCX and PDF (step 8), the report to the head
#     (step 9);
#   - aplikasi-api (Kominfosanti Kabupaten Buleleng): the needs analysis
#     (step 6), the Kasi's decision with its reasons, the delegation to the
#     programmers (step 8), the reports up the chain (steps 10-12) and the
#     berita acara serah terima (step 14).
# Each document is recorded in the request's history with its number and the
# sha256 of its files; `provision letter ID --document KIND` renders one again
# with the same number. It uses its own state home, so it can run again.
set -euo pipefail
cd "$(dirname "$0")/.."
provision() { ${PROVISION:-.venv/bin/provision} "$@"; }
export PROVISIONER_HOME="${PROVISIONER_HOME:-$PWD/var/demo-applications}"
rm -rf "$PROVISIONER_HOME"
data=examples/data

echo "== KON-2024-0015: consultation on a personnel system (Tarakan)"
id=KON-2024-0015
provision request submit examples/tarakan-konsultasi-simpeg.yaml
provision step $id agenda --by bagian_umum --note "Agenda surat masuk"
provision step $id disposisi --by kadis --note "Diteruskan ke Bidang Aplikasi dan Informatika"
provision step $id pengkajian --by bidang_aplikasi
provision decide $id --approve --by bidang_aplikasi --reason "Sesuai rencana induk SPBE Kota Tarakan"
provision step $id pembelian --by bidang_aplikasi --note "Pengadaan melalui penyedia oleh BKPSDM"
echo "== $id step 7: the analysis is recorded with its data file; its record is written"
provision step $id analisa --by bidang_aplikasi --data $data/analisa-simpeg.yaml
echo "== $id step 8: the KAK, as DOCX to edit and as PDF"
provision step $id penyusunan_kak --by bidang_aplikasi --data $data/kak-simpeg.yaml
echo "== $id step 9: the report to the head (nota dinas)"
provision step $id lapor_kadis --by bidang_aplikasi --note "KAK diserahkan ke BKPSDM"
provision step $id terima_laporan --by kadis
provision step $id selesai --by opd
echo "== $id: the KAK again: the same number"
provision letter $id --document kak

echo "== KOM-2024-0044: extending SIPANDU with an API (Buleleng)"
id=KOM-2024-0044
provision request submit examples/buleleng-api-sipandu.yaml
provision step $id disposisi_kadis --by kadis
provision step $id disposisi_kabid --by kabid
provision step $id terima_kasi --by kasi
provision step $id koordinasi --by kasi --note "Dibahas bersama tim programmer"
provision step $id analisa --by programmer --data $data/analisa-sipandu.yaml
echo "== $id step 7: the Kasi decides, with reasons (they go into the documents)"
provision decide $id --approve --by kasi \
    --reason "Data status berkas sudah tersedia di SIPANDU versi 1; tim programmer tersedia"
provision step $id delegasi --by kasi --data $data/delegasi-sipandu.yaml
provision step $id pembuatan --by programmer
echo "== $id steps 10-12: each report goes one level up"
provision step $id lapor_kasi --by programmer
provision step $id lapor_kabid --by kasi
provision step $id lapor_kadis --by kabid
echo "== $id step 14: the berita acara serah terima"
provision step $id serah_terima --by kadis --data $data/serah-terima-sipandu.yaml
provision step $id terima_hasil --by pemohon
provision step $id selesai --by pemohon

echo "== results"
provision request list
for id in KON-2024-0015 KOM-2024-0044; do
    provision request show $id --events | grep -E "document_issued|letter_issued" || true
done
echo "documents:"
ls -1 "$PROVISIONER_HOME"/letters/*/
