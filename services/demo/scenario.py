"""A deterministic demo scenario drawn from the Japan–India EV, battery and recycling article.

The article reports Japanese investment of $100–400 million (₹860–3,500 crore) into India's EV,
battery-manufacturing and recycling ecosystem, discussed in closed-door meetings between Japanese
and Indian firms (Tata, Maruti Suzuki, Attero, Lohum) with Indian government officials present.

The deals, pledges and Japanese trading house, battery maker, refiner, catalyst maker and
private-equity firm below are illustrative: the article names no Japanese firm and no individual
deal. Amounts are chosen so that, at the registry's reference rates (INR 86 and JPY 145 units per
USD), the active pledges add up to exactly the article's $100M low and $400M high.

Every id is fixed (event ids, deal and meeting UUIDs, pledge ids), so submitting the scenario twice
is idempotent: the registry answers a repeated event id with an identical body with its original
receipt.
"""

from __future__ import annotations

from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any
from uuid import UUID, uuid5

DEMO_NAMESPACE = UUID("8f0d6c4e-2a51-5b7e-9c3d-6a1e4b2f7d90")

# The registry's reference rates: units of the currency that buy one US dollar.
REFERENCE_UNITS_PER_USD: dict[str, Decimal] = {
    "USD": Decimal(1),
    "INR": Decimal(86),
    "JPY": Decimal(145),
}

SECTORS = (
    "electric_vehicles",
    "battery_manufacturing",
    "recycling",
    "mineral_processing",
    "joint_ventures_tech_transfer",
)

CENT = Decimal("0.01")
JST = "+09:00"
IST = "+05:30"


def demo_id(kind: str, name: str) -> str:
    """Deterministic id of a demo deal or meeting, shaped as the random (version 4) UUID the
    registry asks partners for, so re-running the demo addresses the same aggregates."""
    digest = uuid5(DEMO_NAMESPACE, f"{kind}:{name}").bytes
    return str(UUID(bytes=digest, version=4))


# Firms: (code, name, country, kind).
JAPANESE_FIRMS: tuple[tuple[str, str, str, str], ...] = (
    ("suzuki-motor", "Suzuki Motor Corporation", "JP", "automaker"),
    ("kaiyo-trading", "Kaiyo Trading Corporation", "JP", "trading_house"),
    ("yamabuki-catalyst", "Yamabuki Catalyst Works", "JP", "manufacturer"),
    ("hoshi-battery", "Hoshi Battery Systems", "JP", "battery_maker"),
    ("kiso-rare-earths", "Kiso Rare Earth Refining", "JP", "mineral_processor"),
    ("sakura-growth-partners", "Sakura Growth Partners", "JP", "private_equity"),
)
INDIAN_FIRMS: tuple[tuple[str, str, str, str], ...] = (
    ("tata-motors", "Tata Motors Limited", "IN", "automaker"),
    ("tata-autocomp", "Tata AutoComp Systems Limited", "IN", "manufacturer"),
    ("maruti-suzuki", "Maruti Suzuki India Limited", "IN", "automaker"),
    ("attero", "Attero Recycling Private Limited", "IN", "recycler"),
    ("lohum", "Lohum Cleantech Private Limited", "IN", "mineral_processor"),
    ("india-mhi", "Ministry of Heavy Industries, Government of India", "IN", "government_body"),
)

# Deals, by a readable slug; the slug names the deal's UUID and event ids.
RECYCLING_JV = "catalytic-converter-recycling-jv"
BATTERY_TECH = "lfp-cell-technology-transfer"
MINERAL_FACILITY = "rare-earth-processing-facility"
EV_EQUITY = "ev-fleet-equity-investment"
EV_COMPONENTS = "ev-component-localisation"

DEAL_IDS: dict[str, str] = {
    slug: demo_id("deal", slug)
    for slug in (RECYCLING_JV, BATTERY_TECH, MINERAL_FACILITY, EV_EQUITY, EV_COMPONENTS)
}
MEETING_ID = demo_id("meeting", "new-delhi-clean-tech-roundtable")


def _at(date: str, time: str = "10:00:00", offset: str = IST) -> str:
    return f"{date}T{time}{offset}"


def _submission(event_id: str, type_: str, occurred_at: str, payload: dict[str, Any]) -> dict:
    return {"event_id": event_id, "type": type_, "occurred_at": occurred_at, "payload": payload}


def _amount(low: int, high: int, currency: str) -> dict[str, str]:
    return {"low": str(low), "high": str(high), "currency": currency}


def _firms() -> list[dict]:
    bodies = []
    for code, name, country, kind in JAPANESE_FIRMS + INDIAN_FIRMS:
        offset = JST if country == "JP" else IST
        bodies.append(
            _submission(
                f"demo-2025-05-firm-{code}",
                "firm_registered",
                _at("2025-05-12", "09:00:00", offset),
                {"code": code, "name": name, "country": country, "kind": kind},
            )
        )
    return bodies


def _meeting() -> dict:
    attendees = [code for code, *_ in JAPANESE_FIRMS + INDIAN_FIRMS]
    return _submission(
        "demo-2025-05-meeting-new-delhi-roundtable",
        "meeting_held",
        _at("2025-05-20", "15:00:00"),
        {
            "meeting_id": MEETING_ID,
            "title": "Japan–India clean-tech supply chain roundtable",
            "location": "New Delhi, India",
            "closed_door": True,
            "attendees": attendees,
            "government_bodies": [
                "Ministry of Heavy Industries (India)",
                "Ministry of Mines (India)",
                "NITI Aayog",
                "Embassy of Japan in India",
            ],
            "sectors": list(SECTORS),
            "summary": (
                "Closed-door meeting of Japanese manufacturers, trading houses and private-equity "
                "investors with Tata, Maruti Suzuki, Attero and Lohum, attended by Indian "
                "government officials. Discussed $100–400 million (₹860–3,500 crore) of "
                "investment in EVs, battery manufacturing, catalytic-converter recycling for "
                "platinum and palladium, and rare-earth processing, to diversify critical-mineral "
                "supply chains away from China."
            ),
        },
    )


def _deal(
    month_day: str,
    slug: str,
    title: str,
    format_: str,
    sector: str,
    parties: list[str],
    description: str,
) -> dict:
    return _submission(
        f"demo-2025-{month_day[:2]}-deal-{slug}",
        "deal_proposed",
        _at(f"2025-{month_day}"),
        {
            "deal_id": DEAL_IDS[slug],
            "title": title,
            "format": format_,
            "sector": sector,
            "parties": parties,
            "description": description,
        },
    )


def _deals() -> list[dict]:
    return [
        _deal(
            "06-03",
            RECYCLING_JV,
            "Catalytic converter recycling joint venture (platinum, palladium)",
            "joint_venture",
            "recycling",
            ["kaiyo-trading", "yamabuki-catalyst", "attero"],
            "Recover platinum, palladium and rhodium from end-of-life catalytic converters "
            "collected in India; Yamabuki contributes catalyst-refining know-how in kind.",
        ),
        _deal(
            "06-05",
            BATTERY_TECH,
            "LFP battery cell technology transfer",
            "technology_transfer",
            "battery_manufacturing",
            ["hoshi-battery", "tata-autocomp"],
            "Licence and production support for lithium iron phosphate cells and packs made "
            "in India under the PLI scheme for advanced chemistry cells.",
        ),
        _deal(
            "06-10",
            MINERAL_FACILITY,
            "Rare-earth and battery-mineral processing facility",
            "processing_facility",
            "mineral_processing",
            ["kiso-rare-earths", "lohum"],
            "Refine rare-earth elements and battery-grade salts from recycled and mined feed, "
            "for EV motors, batteries and hydrogen fuel cells.",
        ),
        _deal(
            "06-12",
            EV_EQUITY,
            "Equity investment in electric commercial fleets",
            "equity_investment",
            "electric_vehicles",
            ["sakura-growth-partners", "tata-motors"],
            "Growth capital for electric commercial vehicles and fleet charging.",
        ),
        _deal(
            "06-16",
            EV_COMPONENTS,
            "EV powertrain component localisation partnership",
            "technology_transfer",
            "joint_ventures_tech_transfer",
            ["suzuki-motor", "maruti-suzuki"],
            "Localise motors, inverters and battery packs for EVs built in India.",
        ),
    ]


def _pledge(
    date: str, slug: str, pledge_id: str, firm: str, low: int, high: int, currency: str
) -> dict:
    return _submission(
        f"demo-2025-{date[:2]}-pledge-{pledge_id}",
        "pledge_made",
        _at(f"2025-{date}"),
        {
            "deal_id": DEAL_IDS[slug],
            "pledge_id": pledge_id,
            "firm": firm,
            "amount": _amount(low, high, currency),
        },
    )


CRORE = 10_000_000

# Pledges: (date, deal, pledge id, firm, low, high, currency).
PLEDGES: tuple[tuple[str, str, str, str, int, int, str], ...] = (
    # Recycling: $15M–60M plus ₹86–344 crore ($10M–40M) = $25M–100M.
    ("06-20", RECYCLING_JV, "kaiyo-attero-jv-1", "kaiyo-trading", 15_000_000, 60_000_000, "USD"),
    ("06-20", RECYCLING_JV, "attero-jv-1", "attero", 86 * CRORE, 344 * CRORE, "INR"),
    # Battery: ¥2.9–11.6 billion ($20M–80M) plus ₹43–172 crore ($5M–20M) = $25M–100M.
    ("06-24", BATTERY_TECH, "hoshi-lfp-1", "hoshi-battery", 2_900_000_000, 11_600_000_000, "JPY"),
    ("06-24", BATTERY_TECH, "tata-autocomp-lfp-1", "tata-autocomp", 43 * CRORE, 172 * CRORE, "INR"),
    # Minerals: $10M–40M plus ₹43–129 crore, later revised to ₹86–258 crore ($10M–30M).
    (
        "07-01",
        MINERAL_FACILITY,
        "kiso-lohum-refinery-1",
        "kiso-rare-earths",
        10_000_000,
        40_000_000,
        "USD",
    ),
    ("07-01", MINERAL_FACILITY, "lohum-refinery-1", "lohum", 43 * CRORE, 129 * CRORE, "INR"),
    # EVs: $20M–80M, and a second tranche of $10M–30M that is later withdrawn.
    (
        "07-08",
        EV_EQUITY,
        "sakura-tata-ev-1",
        "sakura-growth-partners",
        20_000_000,
        80_000_000,
        "USD",
    ),
    (
        "07-08",
        EV_EQUITY,
        "sakura-tata-ev-2",
        "sakura-growth-partners",
        10_000_000,
        30_000_000,
        "USD",
    ),
    # Joint ventures and tech transfer: ¥1.45–7.25 billion ($10M–50M).
    (
        "07-15",
        EV_COMPONENTS,
        "suzuki-maruti-ev-1",
        "suzuki-motor",
        1_450_000_000,
        7_250_000_000,
        "JPY",
    ),
)


def _pledges() -> list[dict]:
    return [_pledge(*row) for row in PLEDGES]


def _changes() -> list[dict]:
    return [
        _submission(
            "demo-2025-08-revise-lohum-refinery-1",
            "pledge_revised",
            _at("2025-08-04"),
            {
                "deal_id": DEAL_IDS[MINERAL_FACILITY],
                "pledge_id": "lohum-refinery-1",
                "amount": _amount(86 * CRORE, 258 * CRORE, "INR"),
                "reason": "Scope widened from rare-earth oxides to lithium and cobalt salts.",
            },
        ),
        _submission(
            "demo-2025-08-withdraw-sakura-tata-ev-2",
            "pledge_withdrawn",
            _at("2025-08-11", offset=JST),
            {
                "deal_id": DEAL_IDS[EV_EQUITY],
                "pledge_id": "sakura-tata-ev-2",
                "reason": "Second tranche folded into the first pledge's range.",
            },
        ),
    ]


def _agreements() -> list[dict]:
    return [
        _submission(
            "demo-2025-09-jv-formed-" + RECYCLING_JV,
            "joint_venture_formed",
            _at("2025-09-02"),
            {
                "deal_id": DEAL_IDS[RECYCLING_JV],
                "venture_name": "Kaiyo Attero Precious Metals Recovery Private Limited",
                "equity": {"attero": "51", "kaiyo-trading": "40", "yamabuki-catalyst": "9"},
            },
        ),
        _submission(
            "demo-2025-09-tech-transfer-" + BATTERY_TECH,
            "tech_transfer_signed",
            _at("2025-09-15"),
            {
                "deal_id": DEAL_IDS[BATTERY_TECH],
                "technology": "Lithium iron phosphate (LFP) cell and pack manufacturing process",
                "licensor": "hoshi-battery",
                "licensee": "tata-autocomp",
            },
        ),
        _submission(
            "demo-2025-10-facility-" + MINERAL_FACILITY,
            "facility_announced",
            _at("2025-10-06"),
            {
                "deal_id": DEAL_IDS[MINERAL_FACILITY],
                "facility": "Lohum–Kiso critical minerals refinery",
                "location": "Greater Noida, Uttar Pradesh, India",
                "capacity": "3,000 tonnes of rare-earth oxides and battery-grade salts a year",
                "materials": [
                    "neodymium",
                    "praseodymium",
                    "dysprosium",
                    "lithium carbonate",
                    "cobalt sulphate",
                    "nickel sulphate",
                ],
            },
        ),
    ]


def scenario() -> list[dict]:
    """The demo's submission bodies, in the order they must be posted to `POST /v1/events`."""
    return _firms() + [_meeting()] + _deals() + _pledges() + _changes() + _agreements()


def _to_usd(amount: dict[str, str], rate: dict[str, str] | None) -> tuple[Decimal, Decimal]:
    if rate is not None:
        units = Decimal(str(rate["units_per_usd"]))
    else:
        units = REFERENCE_UNITS_PER_USD[amount["currency"]]
    low = (Decimal(str(amount["low"])) / units).quantize(CENT, rounding=ROUND_HALF_EVEN)
    high = (Decimal(str(amount["high"])) / units).quantize(CENT, rounding=ROUND_HALF_EVEN)
    return low, high


def expected_totals(bodies: list[dict] | None = None) -> dict[str, Any]:
    """USD totals of the active pledges after the scenario, per sector and overall.

    Computed from the submissions alone (reference rates unless a pledge states its own, rounded
    to cents as the registry does), so the registry's answer can be checked against it. Amounts
    are Decimals quantized to cents; `pledges` counts the active pledges.
    """
    bodies = scenario() if bodies is None else bodies
    sector_of: dict[str, str] = {}
    cancelled: set[str] = set()
    # pledge key (deal_id, pledge_id) -> (sector, usd low, usd high); withdrawn ones removed.
    active: dict[tuple[str, str], tuple[str, Decimal, Decimal]] = {}
    for body in bodies:
        kind, payload = body["type"], body["payload"]
        if kind == "deal_proposed":
            sector_of[str(payload["deal_id"])] = payload["sector"]
            continue
        deal_id = str(payload.get("deal_id", ""))
        if kind in ("pledge_made", "pledge_revised"):
            low, high = _to_usd(payload["amount"], payload.get("rate"))
            active[(deal_id, payload["pledge_id"])] = (sector_of[deal_id], low, high)
        elif kind == "pledge_withdrawn":
            active.pop((deal_id, payload["pledge_id"]), None)
        elif kind == "deal_cancelled":
            cancelled.add(deal_id)

    zero = Decimal("0.00")
    by_sector: dict[str, dict[str, Any]] = {
        sector: {"low": zero, "high": zero, "pledges": 0} for sector in SECTORS
    }
    for (deal_id, _), (sector, low, high) in active.items():
        if deal_id in cancelled:
            continue
        totals = by_sector.setdefault(sector, {"low": zero, "high": zero, "pledges": 0})
        totals["low"] += low
        totals["high"] += high
        totals["pledges"] += 1
    overall = {
        "low": sum((t["low"] for t in by_sector.values()), zero),
        "high": sum((t["high"] for t in by_sector.values()), zero),
        "pledges": sum(t["pledges"] for t in by_sector.values()),
    }
    return {"currency": "USD", "overall": overall, "by_sector": by_sector}
