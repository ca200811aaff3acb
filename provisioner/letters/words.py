"""Numbers, dates and sums in words, as tata naskah dinas writes them.

A berita acara states its date in words ("Pada hari ini Senin tanggal tujuh
bulan Desember tahun dua ribu dua puluh enam") and a KAK its sum of money
("Rp150.000.000,00 (seratus lima puluh juta rupiah)"): a figure alone can be
altered, the words beside it cannot without showing.
"""

from datetime import date

from provisioner.letters.render import MONTHS, ribuan

ONES = ("", "satu", "dua", "tiga", "empat", "lima", "enam", "tujuh", "delapan", "sembilan", "sepuluh",
        "sebelas")
DAYS = ("Senin", "Selasa", "Rabu", "Kamis", "Jumat", "Sabtu", "Minggu")
SCALES = ((10 ** 12, "triliun"), (10 ** 9, "miliar"), (10 ** 6, "juta"))


def terbilang(value: int) -> str:
    """A whole number >= 0 in Indonesian words: 2026 -> "dua ribu dua puluh enam"."""
    if not isinstance(value, int) or value < 0:
        raise ValueError(f"terbilang: {value!r} is not a whole number >= 0")
    if value == 0:
        return "nol"
    return _words(value)


def _words(n: int) -> str:
    if n < 12:
        return ONES[n]
    if n < 20:
        return f"{ONES[n - 10]} belas"
    if n < 100:
        return _join(f"{ONES[n // 10]} puluh", n % 10)
    if n < 200:
        return _join("seratus", n - 100)
    if n < 1000:
        return _join(f"{ONES[n // 100]} ratus", n % 100)
    if n < 2000:
        return _join("seribu", n - 1000)
    if n < 10 ** 6:
        return _join(f"{_words(n // 1000)} ribu", n % 1000)
    for scale, name in SCALES:
        if n >= scale:
            return _join(f"{_words(n // scale)} {name}", n % scale)
    raise AssertionError(n)  # every n >= 10**6 meets a scale above


def _join(head: str, rest: int) -> str:
    return f"{head} {_words(rest)}" if rest else head


def rupiah(value: int) -> str:
    """A sum of money with its words: Rp150.000.000,00 (seratus lima puluh juta rupiah)."""
    return f"Rp{ribuan(value)},00 ({terbilang(value)} rupiah)"


def tanggal_kata(day: date) -> str:
    """The date of a berita acara: "hari Senin tanggal tujuh bulan Desember tahun dua ribu dua puluh enam"."""
    return (f"hari {DAYS[day.weekday()]} tanggal {terbilang(day.day)} bulan {MONTHS[day.month - 1]} "
            f"tahun {terbilang(day.year)}")
