"""Realistic downloads for the demo, deterministic by seed: real PDFs, images and installers.

Where a file belongs follows from its name and content, not its extension alone: a PDF may
be an invoice, a receipt, a bank statement, a paper or slides. Besides the kinds a user
files every week, `unsure()` makes ambiguous files (a bare scan, an iPhone screenshot named
like a photo) and novel ones (a kind never seen before) that a careful sorter leaves alone.
"""

from __future__ import annotations

import io
import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

MONTHS = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]
PEOPLE = ["Alex Morgan", "Sam Keller", "Jo Lindqvist"]
INVOICERS = [
    "Hetzner Online GmbH",
    "Acme Design Studio",
    "Northwind Consulting",
    "Stadtwerke Berlin",
    "Vodafone GmbH",
    "Globex Web Services",
    "Muster & Partner Steuerberatung",
    "Initech Cloud",
]
SHOPS = ["Amazon.de", "REWE", "IKEA", "Deutsche Bahn", "Uber", "Apple Store", "Lieferando", "Shell"]
ITEMS = ["USB-C cable", "coffee beans", "desk lamp", "train ticket", "phone case", "groceries"]
BANKS = ["N26", "ING", "Deutsche Bank", "Sparkasse", "Revolut", "DKB"]
PAYEES = ["REWE Markt", "Miete Mai", "Spotify", "Gehalt ACME GmbH", "Amazon", "BVG Ticket"]
FIELDS = ["graph neural networks", "sparse attention", "protein folding", "causal inference"]
METHODS = ["contrastive pretraining", "low-rank adapters", "diffusion models", "random features"]
SURNAMES = ["smith", "nguyen", "garcia", "mueller", "chen", "okafor", "rossi"]
COURSES = ["Graph algorithms", "Databases", "Linear algebra", "Operating systems", "Statistics"]
TEAMS = ["Platform", "Growth", "Sales", "Design", "Finance"]
APPS = [
    ("firefox-{v}.dmg", "dmg"),
    ("code_{v}-1709912201_amd64.deb", "deb"),
    ("ZoomInstaller.exe", "exe"),
    ("Docker Desktop Installer.exe", "exe"),
    ("VLC-{v}-win64.msi", "msi"),
    ("Obsidian-{v}.AppImage", "elf"),
    ("Slack-{v}-macOS.dmg", "dmg"),
    ("python-{v}-amd64.exe", "exe"),
    ("steam_{v}_amd64.deb", "deb"),
]
KDBX = b"\x03\xd9\xa2\x9a\x67\xfb\x4b\xb5"  # KeePass 2 signature
MAGIC = {
    "dmg": b"x\x01\xec\xbd",
    "deb": b"!<arch>\ndebian-binary   ",
    "exe": b"MZ\x90\x00\x03\x00\x00\x00",
    "msi": b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1",
    "elf": b"\x7fELF\x02\x01\x01\x00",
}


@dataclass(frozen=True)
class Download:
    """One file to drop into Downloads: its name, bytes, and where the user files it."""

    name: str
    kind: str
    data: bytes
    destination: str | None  # relative to home; None: there is no right answer
    note: str = ""  # for an unsure file: what makes it so

    def write(self, folder: Path) -> Path:
        path = folder / self.name
        path.write_bytes(self.data)
        return path


def pdf(lines: list[str], pad: int = 0, rng: random.Random | None = None) -> bytes:
    """A one-page PDF whose first page reads `lines`; `pad` random bytes in an unused stream
    give it a realistic size without changing its text."""
    safe = [ln.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)") for ln in lines]
    body = " T* ".join(f"({ln}) Tj" for ln in safe)
    stream = f"BT /F1 11 Tf 14 TL 60 770 Td {body} ET".encode("latin-1", "replace")
    filler = (rng or random.Random(0)).randbytes(pad)
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R "
        b"/Resources << /Font << /F1 5 0 R >> >> >>",
        b"<< /Length %d >>\nstream\n%s\nendstream" % (len(stream), stream),
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
        b"<< /Length %d >>\nstream\n%s\nendstream" % (len(filler), filler),
    ]
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for number, obj in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n%s\nendobj\n" % (number, obj)
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (
        len(objects) + 1,
        xref,
    )
    return bytes(out)


class DownloadGenerator:
    """Makes downloads the way they arrive: a mix of kinds, each with plausible names."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.taken: set[str] = set()
        self.makers: dict[str, tuple[str, int, Callable[[], tuple[str, bytes]]]] = {
            "invoice": ("Documents/Invoices", 14, self._invoice),
            "receipt": ("Documents/Receipts", 15, self._receipt),
            "statement": ("Documents/Bank", 10, self._statement),
            "paper": ("Documents/Papers", 12, self._paper),
            "slides": ("Documents/Slides", 9, self._slides),
            "photo": ("Pictures/Photos", 16, self._photo),
            "screenshot": ("Pictures/Screenshots", 14, self._screenshot),
            "installer": ("Documents/Software", 10, self._installer),
        }

    @property
    def destinations(self) -> list[str]:
        return sorted({dest for dest, _, _ in self.makers.values()})

    def batch(self, count: int) -> list[Download]:
        """`count` downloads of the usual kinds, every kind present, in arrival order."""
        kinds = list(self.makers)
        weights = [self.makers[k][1] for k in kinds]
        chosen = kinds[: min(count, len(kinds))]
        chosen += self.rng.choices(kinds, weights, k=count - len(chosen))
        self.rng.shuffle(chosen)
        return [self.one(kind) for kind in chosen]

    def one(self, kind: str) -> Download:
        destination, _, make = self.makers[kind]
        name, data = make()
        return Download(self._unique(name), kind, data, destination)

    def unsure(self) -> list[Download]:
        """Files with no clear home: ambiguous ones and kinds never seen before."""
        r = self.rng
        mixed = [
            "Payment confirmation",
            f"Account 1001 1001 {r.randint(1000, 9999)}",
            f"Invoice INV-{r.randint(2022, 2025)}-{r.randint(100, 999)} settled",
            f"Total paid {self._money(20, 400)} EUR",
        ]
        unsure = [
            ("document.pdf", pdf(mixed, 40_000, r), "an invoice, a receipt or a statement?"),
            (f"scan_{r.randint(1, 999):04d}.pdf", pdf(["Page 1 of 1"], 60_000, r), "a bare scan"),
            (
                f"IMG_{r.randint(1, 9999):04d}.PNG",
                self._image(195, 422, "PNG", window=True),
                "an iPhone screenshot, named like a photo",
            ),
        ]
        novel = [
            ("benchy_0.2mm_PLA_MK4_1h32m.gcode", self._gcode(), "3D-printer G-code"),
            ("Passwords.kdbx", KDBX + r.randbytes(6_000), "a password database"),
        ]
        return [
            *(Download(self._unique(n), "ambiguous", data, None, why) for n, data, why in unsure),
            *(
                Download(self._unique(n), "novel", data, None, f"{why}: a kind never filed before")
                for n, data, why in novel
            ),
        ]

    # -- the kinds ----------------------------------------------------------------------------

    def _date(self) -> tuple[int, int, int]:
        return self.rng.randint(2022, 2025), self.rng.randint(1, 12), self.rng.randint(1, 28)

    def _money(self, low: int, high: int) -> str:
        return f"{self.rng.randint(low, high)}.{self.rng.randint(0, 99):02d}"

    def _invoice(self) -> tuple[str, bytes]:
        r = self.rng
        y, m, d = self._date()
        who = r.choice(INVOICERS)
        slug = who.split()[0].lower().strip("&")
        num = f"{y}-{r.randint(100, 9999):04d}"
        name = r.choice(
            [
                f"Invoice_{num}.pdf",
                f"invoice-{slug}-{y}-{m:02d}.pdf",
                f"Rechnung_{num}.pdf",
                f"INV{r.randint(10000, 99999)}.pdf",
                f"{slug}_invoice_{MONTHS[m - 1].lower()}{y}.pdf",
            ]
        )
        total = self._money(40, 4800)
        lines = [
            r.choice(["INVOICE", "Invoice", "RECHNUNG / INVOICE"]),
            who,
            f"Invoice number: {num}    Invoice date: {d:02d}.{m:02d}.{y}",
            f"Bill to: {r.choice(PEOPLE)}",
            f"{r.choice(['Hosting', 'Consulting', 'Design work', 'Electricity', 'Mobile plan'])}"
            f"  {r.randint(1, 40)} x {self._money(10, 120)} EUR",
            f"Total due: {total} EUR (incl. 19% VAT)",
            f"Please pay within {r.choice([7, 14, 30])} days to IBAN DE89 3704 0044 0532 0130 00",
        ]
        return name, pdf(lines, r.randint(20_000, 80_000), r)

    def _receipt(self) -> tuple[str, bytes]:
        r = self.rng
        y, m, d = self._date()
        shop = r.choice(SHOPS)
        order = f"{r.randint(100, 999)}-{r.randint(1000000, 9999999)}"
        total = self._money(3, 240)
        lines = [
            r.choice(["Receipt", "Your receipt", "Order confirmation"]),
            f"{shop} - thank you for your purchase",
            f"Order #{order}   {d:02d} {MONTHS[m - 1]} {y}",
            f"{r.randint(1, 3)} x {r.choice(ITEMS)}",
            f"Total paid: {total} EUR",
            f"Paid with {r.choice(['Visa', 'PayPal'])} ending in {r.randint(1000, 9999)}",
        ]
        if r.random() < 0.25:
            name = r.choice([f"order-confirmation-{order}.txt", f"Your {shop} order.txt"])
            return name, "\n".join(lines).encode()
        name = r.choice(
            [
                f"receipt_{y}-{m:02d}-{d:02d}.pdf",
                f"Order_{order}.pdf",
                f"Receipt-{r.randint(1000, 9999)}-{r.randint(1000, 9999)}.pdf",
                f"{shop.split('.')[0].replace(' ', '')}_receipt.pdf",
            ]
        )
        return name, pdf(lines, r.randint(5_000, 30_000), r)

    def _statement(self) -> tuple[str, bytes]:
        r = self.rng
        y, m, _ = self._date()
        bank = r.choice(BANKS)
        slug = bank.replace(" ", "").lower()
        rows = [
            f"{r.randint(1, 28):02d}.{m:02d}.{y},{r.choice(PAYEES)},"
            f"{r.choice(['-', '+', '-'])}{self._money(3, 900)}"
            for _ in range(r.randint(8, 30))
        ]
        if r.random() < 0.3:
            name = r.choice([f"transactions_{y}-{m:02d}.csv", f"{slug}-export-{y}{m:02d}.csv"])
            return name, ("Date,Description,Amount EUR\n" + "\n".join(rows) + "\n").encode()
        name = r.choice(
            [
                f"Statement_{y}-{m:02d}.pdf",
                f"Kontoauszug_{y}_{m:02d}.pdf",
                f"account-statement-{MONTHS[m - 1].lower()}-{y}.pdf",
                f"{slug}_statement_{y}{m:02d}.pdf",
            ]
        )
        lines = [
            f"{bank} - Account statement {MONTHS[m - 1]} {y}",
            f"{r.choice(PEOPLE)}   IBAN DE{r.randint(10, 99)} 1001 1001 {r.randint(1000, 9999)}",
            f"Opening balance: {self._money(100, 9000)} EUR",
            *[row.replace(",", "  ") for row in rows[:5]],
            f"Closing balance: {self._money(100, 9000)} EUR",
        ]
        return name, pdf(lines, r.randint(30_000, 120_000), r)

    def _paper(self) -> tuple[str, bytes]:
        r = self.rng
        y = r.randint(2015, 2025)
        field, method = r.choice(FIELDS), r.choice(METHODS)
        arxiv = f"{y % 100:02d}{r.randint(1, 12):02d}.{r.randint(10000, 19999)}"
        author = r.choice(SURNAMES)
        name = r.choice(
            [
                f"{arxiv}v{r.randint(1, 3)}.pdf",
                f"{arxiv}.pdf",
                f"{author}{y}_{field.split()[-1]}.pdf",
                f"{method.replace(' ', '_')}_for_{field.replace(' ', '_')}.pdf",
            ]
        )
        lines = [
            f"{method.capitalize()} for {field}",
            f"{author.capitalize()}, {r.choice(SURNAMES).capitalize()} and"
            f" {r.choice(SURNAMES).capitalize()}",
            "Abstract",
            f"We study {field} and show that {method} improve accuracy by"
            f" {r.randint(2, 19)}% on {r.randint(3, 12)} benchmarks.",
            "1 Introduction",
            f"arXiv:{arxiv} [cs.LG]",
        ]
        return name, pdf(lines, r.randint(80_000, 300_000), r)

    def _slides(self) -> tuple[str, bytes]:
        r = self.rng
        y = r.randint(2022, 2025)
        if r.random() < 0.5:
            n, course = r.randint(1, 14), r.choice(COURSES)
            name = r.choice(
                [f"Lecture_{n:02d}_{course.replace(' ', '_')}.pdf", f"L{n:02d} - {course}.pdf"]
            )
            lines = [f"Lecture {n}: {course}", f"CS {r.randint(100, 499)} - Spring {y}"]
        else:
            q, team = r.randint(1, 4), r.choice(TEAMS)
            name = r.choice([f"{team}_Q{q}_review.pdf", f"Q{q} {y} {team} all-hands.pdf"])
            lines = [f"Q{q} {y} review", f"Team {team}"]
        lines += [
            "Agenda",
            "1. Where we are  2. Results  3. Next steps",
            f"1 / {r.randint(12, 48)}",
        ]
        return name, pdf(lines, r.randint(150_000, 500_000), r)

    def _photo(self) -> tuple[str, bytes]:
        r = self.rng
        y, m, d = self._date()
        t = f"{r.randint(7, 22):02d}{r.randint(0, 59):02d}{r.randint(0, 59):02d}"
        name = r.choice(
            [
                f"IMG_{y}{m:02d}{d:02d}_{t}.jpg",
                f"PXL_{y}{m:02d}{d:02d}_{t}{r.randint(100, 999)}.jpg",
                f"DSC{r.randint(1, 9999):05d}.JPG",
                f"WhatsApp Image {y}-{m:02d}-{d:02d} at {t[:2]}.{t[2:4]}.{t[4:]}.jpeg",
            ]
        )
        return name, self._image(r.choice([160, 200, 240]), 120, "JPEG")

    def _screenshot(self) -> tuple[str, bytes]:
        r = self.rng
        y, m, d = self._date()
        h, mi, s = r.randint(7, 22), r.randint(0, 59), r.randint(0, 59)
        name = r.choice(
            [
                f"Screenshot {y}-{m:02d}-{d:02d} at {h}.{mi:02d}.{s:02d}.png",
                f"Screenshot_{y}{m:02d}{d:02d}-{h:02d}{mi:02d}{s:02d}.png",
                f"Screenshot_{y}{m:02d}{d:02d}-{h:02d}{mi:02d}{s:02d}_Chrome.jpg",
                f"Screenshot from {y}-{m:02d}-{d:02d} {h:02d}-{mi:02d}-{s:02d}.png",
                f"Bildschirmfoto {y}-{m:02d}-{d:02d} um {h}.{mi:02d}.{s:02d}.png",
            ]
        )
        fmt = "JPEG" if name.endswith(".jpg") else "PNG"
        return name, self._image(r.choice([640, 800]), r.choice([400, 450]), fmt, window=True)

    def _installer(self) -> tuple[str, bytes]:
        r = self.rng
        template, magic = r.choice(APPS)
        version = f"{r.randint(1, 130)}.{r.randint(0, 9)}.{r.randint(0, 20)}"
        return template.format(v=version), MAGIC[magic] + r.randbytes(r.randint(30_000, 150_000))

    def _gcode(self) -> bytes:
        moves = [
            f"G1 X{self.rng.uniform(0, 200):.3f} Y{self.rng.uniform(0, 200):.3f} E{i * 0.03:.5f}"
            for i in range(400)
        ]
        head = "; generated by PrusaSlicer 2.7.1\nM104 S215\nM140 S60\nG28 ; home all axes\n"
        return (head + "\n".join(moves) + "\n").encode()

    def _image(self, width: int, height: int, fmt: str, window: bool = False) -> bytes:
        """A real image: camera-like noise for photos, flat windows and text for screens."""
        from PIL import Image, ImageDraw

        r = self.rng
        if window:
            image = Image.new("RGB", (width, height), (r.randint(200, 255),) * 3)
            draw = ImageDraw.Draw(image)
            draw.rectangle((0, 0, width, 28), fill=(r.randint(30, 90),) * 3)
            for row in range(40, height - 20, 22):
                draw.text((16, row), f"{r.choice(ITEMS)}  {self._money(1, 99)}", fill=(20, 20, 20))
        else:
            image = Image.frombytes("RGB", (width, height), r.randbytes(width * height * 3))
        out = io.BytesIO()
        image.save(out, format=fmt, **({"quality": 85} if fmt == "JPEG" else {}))
        return out.getvalue()

    def _unique(self, name: str) -> str:
        """Browsers add " (1)" to a name already downloaded."""
        stem, dot, ext = name.rpartition(".")
        candidate, n = name, 1
        while candidate.lower() in self.taken:
            candidate, n = f"{stem} ({n}){dot}{ext}", n + 1
        self.taken.add(candidate.lower())
        return candidate
