"""Regenerates identity_sightings.jsonl: synthetic sightings of made-up people across channels.

Run from the repository root: `.venv/bin/python services/identity/tests/data/make_identity_sightings.py`.
Every name, address and number is invented; phone numbers are valid-looking only so that the
phone library accepts them. Each line: person label, channel, identifiers as given, display name.
The default region for numbers without a country code is US.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

OUT = Path(__file__).with_name("identity_sightings.jsonl")

Sighting = dict[str, object]


def sighting(person: str, channel: str, name: str, *identifiers: tuple[str, str]) -> Sighting:
    return {"person": person, "channel": channel, "display_name": name, "identifiers": [list(i) for i in identifiers]}


def us_formats(area: str, exchange: str, line: str) -> list[str]:
    return [
        f"+1{area}{exchange}{line}",
        f"+1 ({area}) {exchange}-{line}",
        f"({area}) {exchange}-{line}",
        f"{area}.{exchange}.{line}",
        f"1-{area}-{exchange}-{line}",
        f" {area} {exchange} {line} ",
    ]


def build() -> list[Sighting]:
    rng = random.Random(20261126)
    out: list[Sighting] = []
    chronological: set[str] = set()  # people whose sightings keep their order after the shuffle
    # 1. Email-only people, including look-alike addresses that belong to different people.
    email_people = [
        ("E01", "Alice Moreau", "Alice.Moreau@Example.com"),
        ("E02", "Alice Moreau", "alice.moreau@example.org"),  # same name, other person
        ("E03", "John Doe", "john.doe@acme-mail.test"),
        ("E04", "Johnny Doe", "john.doe1@acme-mail.test"),
        ("E05", "J. Doe", "johndoe@acme-mail.test"),
        ("E06", "Priya Raman", "Priya.Raman+support@Mailbox.io"),
        ("E07", "Priya Raman", "priya.raman@mailbox.io"),  # without the +tag: another address
        ("E08", "Kenji Watanabe", "KENJI@WATANABE.JP"),
        ("E09", "Zoë Müller", "zoe.mueller@beispiel.de"),
        ("E10", "Omar Haddad", "omar_haddad@corp.example"),
    ]
    for pid, name, email in email_people:
        variants = [email, email.lower(), f"  {email.upper()}  ", email.swapcase(), f"\t{email}\n"]
        for v in variants[: rng.randint(3, 4)]:
            out.append(sighting(pid, "EMAIL", name, ("EMAIL", v)))
    # 2. WhatsApp-only people: Twilio's "whatsapp:+E164" and the number as staff might type it.
    wa_people = [
        (
            "W01",
            "Carlos Ruiz",
            "+34612345678",
            ["whatsapp:+34612345678", "whatsapp: +34 612 345 678", "+34 612-345-678"],
        ),
        (
            "W02",
            "Ana Souza",
            "+5511912345678",
            ["whatsapp:+5511912345678", "WhatsApp:+55 11 91234-5678", "0055 11 91234 5678"],
        ),
        (
            "W03",
            "Raj Patel",
            "+919876543210",
            ["whatsapp:+919876543210", "whatsapp:+91 98765 43210", "+91-98765-43210"],
        ),
        (
            "W04",
            "Lena Schmidt",
            "+4915123456789",
            ["whatsapp:+4915123456789", "whatsapp:+49 151 23456789", "+49 (0)151 23456789"],
        ),
        (
            "W05",
            "Tom Baker",
            "+447400123456",
            ["whatsapp:+447400123456", "whatsapp:+44 7400 123456", "+44 (0) 7400 123456"],
        ),
        (
            "W06",
            "Tom Baker",
            "+447400123457",
            ["whatsapp:+447400123457", "whatsapp:+44 7400 123 457"],
        ),  # one digit apart
        (
            "W07",
            "Grace Kim",
            "+14155550142",
            [*us_formats("415", "555", "0142")[:1], "whatsapp:(415) 555-0142", "whatsapp:415.555.0142"],
        ),
        (
            "W08",
            "Grace Kim",
            "+16505550142",
            ["whatsapp:+16505550142", "whatsapp:(650) 555-0142", "whatsapp:1-650-555-0142"],
        ),
        ("W09", "Mehmet Yilmaz", "+905321234567", ["whatsapp:+905321234567", "whatsapp:+90 532 123 45 67"]),
        (
            "W10",
            "Chloe Martin",
            "+33612345678",
            ["whatsapp:+33612345678", "whatsapp:+33 6 12 34 56 78", "whatsapp: 0033 6 12 34 56 78"],
        ),
    ]
    for pid, name, _e164, variants in wa_people:
        for v in variants:
            value = v if v.lower().startswith("whatsapp") else f"whatsapp:{v}"
            out.append(sighting(pid, "WHATSAPP", name, ("WHATSAPP", value)))
    # 3. WhatsApp users whose number and business-scoped user id arrive together, later the id
    #    alone (the user adopted a username and hid the number).
    bsuid_people = [
        ("B01", "Nadia Petrova", "whatsapp:+4917612345678", "DE.13491208655302741918"),
        ("B02", "Luis Ortega", "whatsapp:+525512345678", "MX.88412093847561029384"),
        ("B03", "Fatima Zahra", "whatsapp:+212612345678", "MA.55120938475610293847"),
        ("B04", "Ivan Horvat", "whatsapp:+385912345678", "HR.20938475610293847561"),
        ("B05", "Sara Lindqvist", "whatsapp:+46701234567", "SE.71029384756102938475"),
        ("B06", "Emma Wilson", "whatsapp:+14155550199", "US.13491208655302741918"),  # same digits as B01, other country
        ("B07", "Diego Rossi", "whatsapp:+393123456789", "IT.9f3kA0b7Zq1x"),
        ("B08", "Diego Rossi", "whatsapp:+393123456788", "IT.9f3kA0b7Zq1y"),
    ]
    for pid, name, number, bsuid in bsuid_people:
        # In the order WhatsApp produces them: the number alone (before ids were sent), both, the id alone.
        out.append(sighting(pid, "WHATSAPP", name, ("WHATSAPP", number)))
        out.append(sighting(pid, "WHATSAPP", name, ("WHATSAPP", number), ("WHATSAPP_BSUID", bsuid)))
        out.append(sighting(pid, "WHATSAPP", name, ("WHATSAPP_BSUID", bsuid)))
        out.append(sighting(pid, "WHATSAPP", name, ("WHATSAPP_BSUID", f"whatsapp:{bsuid}")))
        chronological.add(pid)
    # 4. Username-only WhatsApp users: only ever a BSUID.
    for n, (cc, digits) in enumerate(
        [
            ("US", "40291837465019283746"),
            ("GB", "50192837465019283741"),
            ("IN", "60192837465019283742"),
            ("BR", "70192837465019283743"),
            ("us", "80192837465019283744"),
        ],
        start=1,
    ):
        pid = f"U{n:02d}"
        for value in (f"{cc}.{digits}", f" whatsapp:{cc.upper()}.{digits} ", f"{cc.upper()}.{digits}"):
            out.append(sighting(pid, "WHATSAPP", f"User {n}", ("WHATSAPP_BSUID", value)))
    # 5. Web-form people: email with an optional phone in any format, later plain email.
    form_people = [
        ("F01", "Bob Lee", "Bob.Lee@Example.org", ("415", "555", "0101")),
        ("F02", "Mia Wong", "mia.wong@shop.example", ("212", "555", "0102")),
        ("F03", "Noah Clark", "NOAH@clark.family", ("312", "555", "0103")),
        ("F04", "Olivia Brown", "olivia.brown@uni.edu", ("617", "555", "0104")),
        ("F05", "Liam Scott", "liam@scott.dev", None),
        ("F06", "Ava Green", "ava.green@studio.example", ("303", "555", "0106")),
        ("F07", "Ethan Hall", "ethan.hall@firm.example", ("206", "555", "0107")),
        ("F08", "Sofia Rossi", "sofia.rossi@esempio.it", None),
        ("F09", "Lucas Young", "lucas.young@labs.example", ("512", "555", "0109")),
        ("F10", "Isla King", "isla.king@example.co.uk", ("415", "555", "0110")),
        ("F11", "Bob Lee", "bob.lee@other.example", ("415", "555", "0111")),  # same name as F01
        ("F12", "Maya Singh", "maya.singh@clinic.example", ("720", "555", "0112")),
    ]
    for pid, name, email, phone in form_people:
        formats = us_formats(*phone) if phone else []
        rng.shuffle(formats)
        if phone:
            out.append(sighting(pid, "WEB_FORM", name, ("EMAIL", email), ("PHONE", formats[0])))
            out.append(sighting(pid, "WEB_FORM", name, ("EMAIL", email.upper()), ("PHONE", formats[1])))
        else:
            out.append(sighting(pid, "WEB_FORM", name, ("EMAIL", email)))
        out.append(sighting(pid, "EMAIL", name, ("EMAIL", f" {email.lower()} ")))
        out.append(sighting(pid, "WEB_FORM", name, ("EMAIL", email.swapcase())))
    # 6. People on email and the web form, with the form's phone given only sometimes.
    mixed = [
        ("M01", "Hana Sato", "hana.sato@example.jp", "+81 90-1234-5678"),
        ("M02", "Yusuf Demir", "yusuf@demir.example", "+90 532 765 43 21"),
        ("M03", "Elena Popescu", "elena.popescu@exemplu.ro", "+40 721 234 567"),
        ("M04", "Arjun Mehta", "arjun.mehta@example.in", "+91 91234 56789"),
        ("M05", "Sophie Dubois", "Sophie.Dubois@Exemple.fr", "+33 6 98 76 54 32"),
    ]
    for pid, name, email, number in mixed:
        out.append(sighting(pid, "EMAIL", name, ("EMAIL", email)))
        out.append(sighting(pid, "WEB_FORM", name, ("EMAIL", email.upper()), ("PHONE", number)))
        out.append(sighting(pid, "WEB_FORM", name, ("EMAIL", f"  {email}"), ("PHONE", number.replace(" ", ""))))
        out.append(sighting(pid, "EMAIL", name, ("EMAIL", email.lower())))
    in_order = {pid: [s for s in out if s["person"] == pid] for pid in chronological}
    rng.shuffle(out)
    for pid, ordered in in_order.items():
        slots = [n for n, s in enumerate(out) if s["person"] == pid]
        for slot, s in zip(slots, ordered, strict=True):
            out[slot] = s
    return out


def main() -> None:
    rows = build()
    OUT.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    people = {r["person"] for r in rows}
    print(f"{len(rows)} sightings of {len(people)} people -> {OUT.name}")


if __name__ == "__main__":
    main()
