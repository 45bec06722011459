"""A year of illustrative activity after the article's scenario, for `dealreg demo --history`.

The article says 70+ Japanese firms took part but names none, so every firm this module invents
is named "... (fictional)", and every deal and meeting it invents says in its description or
summary that it is illustrative. Real names appear only where the article gives them (Tata,
Maruti Suzuki, Attero, Lohum) or the scenario already uses them; real government bodies appear
only as the meetings' attending officials, as in the scenario.

The history starts the Monday after the scenario's last event (2025-10-13) and runs a year:
firms join, meetings (some closed-door, with officials) come and go, deals are proposed in every
sector, pledges are made in USD, INR and JPY, some revised, some withdrawn, a few deals cancelled,
and agreements signed, so cumulative pledges over business time (`occurred_at`) have a shape.

It is generated from a fixed seed, so it is the same list every time; event ids, deal and
meeting ids and pledge ids are fixed, and recording it twice records nothing twice. The ids do
not depend on the seed: only the default seed is meant to be recorded into a registry.

Demo data is recognisable in the read model: every demo event id (scenario and history) starts
with `demo-` (`is_illustrative`), and every invented firm's name ends with "(fictional)"
(`is_fictional_firm_name`); `fictional_firm_codes()` also covers the scenario's invented firms,
whose names predate the marker.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta, timezone
from typing import Any

from services.demo.scenario import (
    BATTERY_TECH,
    DEAL_IDS,
    INDIAN_FIRMS,
    JAPANESE_FIRMS,
    RECYCLING_JV,
    SECTORS,
    demo_id,
)

SEED = 20251013
HISTORY_START = date(2025, 10, 13)
HISTORY_END = date(2026, 10, 9)

DEMO_EVENT_ID_PREFIX = "demo-"
HISTORY_EVENT_ID_PREFIX = "demo-history-"
FICTIONAL_MARKER = "(fictional)"
ILLUSTRATIVE_NOTE = "Illustrative demo data: fictional firms, deals and amounts."

JST = timezone(timedelta(hours=9))
IST = timezone(timedelta(hours=5, minutes=30))
CRORE = 10_000_000


def is_illustrative(event_id: str) -> bool:
    """True for an event id the demo uses (scenario and history): all start with `demo-`."""
    return event_id.startswith(DEMO_EVENT_ID_PREFIX)


def is_fictional_firm_name(name: str) -> bool:
    """True for a firm name the history invented: it ends with "(fictional)"."""
    return name.rstrip().endswith(FICTIONAL_MARKER)


# Invented stems: Japanese words for weather and colours, Indian rivers and hills. Each firm's
# name ends with the marker, so no reader takes one for a real company.
JAPANESE_STEMS = (
    "Kitakaze", "Tsukishiro", "Minamikaze", "Shirakumo", "Hoshizora", "Kumonami",
    "Mizuhana", "Yukishiro", "Akanezora", "Haruyama", "Natsukumo", "Akikaze",
    "Fuyuhoshi", "Kogarashi", "Sazanami", "Tsuyukusa", "Hotarubi", "Kagerou",
    "Shinonome", "Yuugure", "Asagiri", "Harukaze", "Kazahana", "Murasame",
    "Tokiwagi", "Wakabayama", "Kurenaizora", "Ruriiro", "Kohakugawa", "Hisuiyama",
    "Sangoura", "Ginreisou", "Mizunagi", "Isaribi", "Umihotaru", "Oborozuki",
)
JAPANESE_SUFFIXES: dict[str, tuple[str, ...]] = {
    "manufacturer": ("Motor Components", "Electrode Materials", "Power Electronics",
                     "Precision Castings", "Catalyst Industries", "Magnet Works"),
    "battery_maker": ("Battery Works", "Cell Technologies", "Energy Storage"),
    "private_equity": ("Capital Partners", "Growth Fund", "Impact Investors"),
    "trading_house": ("Trading Company", "Shoji", "Resources Trading"),
    "recycler": ("Resource Recovery", "Precious Metals Recovery", "Urban Mining"),
    "mineral_processor": ("Rare Earth Refining", "Battery Materials", "Critical Minerals"),
    "automaker": ("Mobility", "Electric Vehicles"),
    "other": ("Hydrogen Systems", "Engineering", "Fuel Cell Labs"),
}
# 72 firms: mostly manufacturers and private-equity players, as the article says.
JAPANESE_KIND_COUNTS = {
    "manufacturer": 22, "battery_maker": 10, "private_equity": 10, "trading_house": 8,
    "recycler": 7, "mineral_processor": 7, "automaker": 3, "other": 5,
}
INDIAN_FIRMS_INVENTED: tuple[tuple[str, str, str], ...] = (
    # (stem, suffix, kind)
    ("Narmada", "Cell Industries", "battery_maker"),
    ("Godavari", "Auto Components", "manufacturer"),
    ("Sahyadri", "E-Mobility", "automaker"),
    ("Vindhya", "Metals Recovery", "recycler"),
    ("Aravalli", "Critical Minerals", "mineral_processor"),
    ("Tapti", "Power Electronics", "manufacturer"),
    ("Kaveri", "Electric Fleets", "automaker"),
    ("Nilgiri", "Battery Systems", "battery_maker"),
    ("Chambal", "Recycling Works", "recycler"),
    ("Mahanadi", "Rare Earths", "mineral_processor"),
    ("Brahmaputra", "Motors", "manufacturer"),
    ("Satpura", "Three-Wheelers", "automaker"),
    ("Konkan", "Cathode Materials", "manufacturer"),
    ("Malabar", "Energy Storage", "battery_maker"),
    ("Doaba", "E-Waste Recovery", "recycler"),
    ("Shivalik", "Minerals Refining", "mineral_processor"),
    ("Sundarban", "Fuel Cells", "manufacturer"),
    ("Rann", "Magnet Industries", "manufacturer"),
)


@dataclass(frozen=True)
class HistoryFirm:
    """A firm deals are drawn from; `short` names it in deal and venture titles."""

    code: str
    name: str
    short: str
    country: str
    kind: str


def _code(stem: str, suffix: str) -> str:
    words = f"{stem} {suffix}".lower().replace("-", " ").split()
    return "-".join(words)


def _invented_japanese_firms(rng: random.Random) -> list[HistoryFirm]:
    kinds = [kind for kind, count in JAPANESE_KIND_COUNTS.items() for _ in range(count)]
    rng.shuffle(kinds)
    stems = [stem for stem in JAPANESE_STEMS for _ in range(2)]
    firms: list[HistoryFirm] = []
    codes: set[str] = set()
    for stem, kind in zip(stems, kinds, strict=True):
        suffixes = list(JAPANESE_SUFFIXES[kind])
        rng.shuffle(suffixes)
        suffix = next(s for s in suffixes if _code(stem, s) not in codes)
        code = _code(stem, suffix)
        codes.add(code)
        firms.append(HistoryFirm(code, f"{stem} {suffix} {FICTIONAL_MARKER}", stem, "JP", kind))
    return firms


def _invented_indian_firms() -> list[HistoryFirm]:
    return [
        HistoryFirm(_code(stem, suffix), f"{stem} {suffix} {FICTIONAL_MARKER}", stem, "IN", kind)
        for stem, suffix, kind in INDIAN_FIRMS_INVENTED
    ]


SCENARIO_SHORT_NAMES = {
    "suzuki-motor": "Suzuki", "kaiyo-trading": "Kaiyo", "yamabuki-catalyst": "Yamabuki",
    "hoshi-battery": "Hoshi", "kiso-rare-earths": "Kiso", "sakura-growth-partners": "Sakura",
    "tata-motors": "Tata Motors", "tata-autocomp": "Tata AutoComp",
    "maruti-suzuki": "Maruti Suzuki", "attero": "Attero", "lohum": "Lohum",
}
# The scenario's Japanese firms are invented too, except Suzuki Motor (Maruti Suzuki's parent).
SCENARIO_INVENTED_CODES = frozenset(
    code for code, *_ in JAPANESE_FIRMS if code != "suzuki-motor"
)
GOVERNMENT_FIRM = "india-mhi"
ARTICLE_INDIAN_FIRMS = frozenset(
    {"tata-motors", "tata-autocomp", "maruti-suzuki", "attero", "lohum"})
SCENARIO_CODES = frozenset(code for code, *_ in JAPANESE_FIRMS + INDIAN_FIRMS)
VENTURE_WORDS = {
    "electric_vehicles": "E-Mobility", "battery_manufacturing": "Battery Systems",
    "recycling": "Metals Recovery", "mineral_processing": "Magnetics",
    "joint_ventures_tech_transfer": "Clean Power",
}


def _scenario_firms() -> list[HistoryFirm]:
    return [
        HistoryFirm(code, name, SCENARIO_SHORT_NAMES[code], country, kind)
        for code, name, country, kind in JAPANESE_FIRMS + INDIAN_FIRMS
        if code != GOVERNMENT_FIRM
    ]


def fictional_firm_codes(seed: int = SEED) -> frozenset[str]:
    """Codes of every invented firm the demo registers: the history's and the scenario's."""
    invented = _invented_japanese_firms(random.Random(seed)) + _invented_indian_firms()
    return frozenset(firm.code for firm in invented) | SCENARIO_INVENTED_CODES


# What deals are about: (sector, format, title, description, technology or facility detail).
@dataclass(frozen=True)
class Topic:
    sector: str
    format: str
    title: str
    description: str
    detail: str = ""
    materials: tuple[str, ...] = ()


TOPICS: tuple[Topic, ...] = (
    Topic("electric_vehicles", "equity_investment", "growth equity in electric two-wheelers",
          "Minority stake funding a second electric scooter line and dealer charging."),
    Topic("electric_vehicles", "equity_investment", "electric commercial fleet fund",
          "Capital for leased electric light commercial vehicles in metro logistics."),
    Topic("electric_vehicles", "joint_venture", "electric three-wheeler assembly venture",
          "Assemble electric three-wheelers with locally made packs and hub motors.",
          "Electric three-wheeler platform and hub-motor assembly"),
    Topic("electric_vehicles", "technology_transfer", "traction motor technology licence",
          "Licence for permanent-magnet traction motors made in India.",
          "Permanent-magnet traction motor design and winding process"),
    Topic("battery_manufacturing", "technology_transfer", "LFP cathode process licence",
          "Licence and engineering support for lithium iron phosphate cathode powder.",
          "LFP cathode active material synthesis process"),
    Topic("battery_manufacturing", "technology_transfer", "sodium-ion cell licence",
          "Pilot production of sodium-ion cells for two-wheelers and stationary storage.",
          "Sodium-ion cell chemistry and formation process"),
    Topic("battery_manufacturing", "joint_venture", "cell-to-pack assembly venture",
          "Battery pack assembly for cars and buses under the PLI scheme for advanced "
          "chemistry cells.", "Cell-to-pack battery assembly process"),
    Topic("battery_manufacturing", "processing_facility", "cathode active material plant",
          "Cathode active material plant supplying Indian cell makers.",
          "Cathode active material plant", ("lithium carbonate", "iron phosphate",
                                            "nickel sulphate")),
    Topic("battery_manufacturing", "equity_investment", "equity in a battery pack maker",
          "Growth equity for a maker of battery packs and battery management systems."),
    Topic("recycling", "joint_venture", "catalytic converter recycling venture",
          "Collect end-of-life catalytic converters and recover platinum, palladium and "
          "rhodium.", "Autocatalyst decanning and platinum-group metal leaching process"),
    Topic("recycling", "processing_facility", "black-mass recovery plant",
          "Shred spent lithium-ion batteries and recover black mass for refining.",
          "Black-mass recovery plant", ("black mass", "copper", "aluminium")),
    Topic("recycling", "processing_facility", "platinum-group metal refining line",
          "Refine platinum-group metals from spent autocatalysts collected in India.",
          "Platinum-group metal refinery", ("platinum", "palladium", "rhodium")),
    Topic("recycling", "equity_investment", "equity in an e-waste recycler",
          "Growth equity for a recycler of EV components and electronics."),
    Topic("mineral_processing", "processing_facility", "rare-earth separation plant",
          "Separate rare-earth oxides for EV motor magnets and wind turbines.",
          "Rare-earth separation plant", ("neodymium", "praseodymium", "dysprosium")),
    Topic("mineral_processing", "processing_facility", "lithium hydroxide refinery",
          "Refine battery-grade lithium hydroxide from imported spodumene and recycled feed.",
          "Lithium hydroxide refinery", ("lithium hydroxide", "lithium carbonate")),
    Topic("mineral_processing", "joint_venture", "rare-earth magnet venture",
          "Make sintered rare-earth magnets in India, away from single-country supply.",
          "Sintered neodymium-iron-boron magnet production"),
    Topic("mineral_processing", "processing_facility", "graphite anode plant",
          "Purify and coat natural graphite for battery anodes.",
          "Graphite anode material plant", ("natural graphite", "synthetic graphite")),
    Topic("joint_ventures_tech_transfer", "joint_venture", "fuel-cell stack venture",
          "Build hydrogen fuel-cell stacks for buses and trucks.",
          "Hydrogen fuel-cell stack design and assembly"),
    Topic("joint_ventures_tech_transfer", "technology_transfer",
          "fuel-cell catalyst technology licence",
          "Licence for platinum-based fuel-cell catalysts and their recovery.",
          "Platinum fuel-cell catalyst coating and recovery"),
    Topic("joint_ventures_tech_transfer", "joint_venture", "power electronics venture",
          "Design and make inverters and on-board chargers for EVs built in India.",
          "Silicon-carbide inverter and on-board charger design"),
    Topic("joint_ventures_tech_transfer", "technology_transfer",
          "magnet recycling process licence",
          "Licence to recover rare earths from end-of-life motor magnets.",
          "Rare-earth magnet recycling process"),
)
SECTOR_WEIGHTS = {
    "electric_vehicles": 21, "battery_manufacturing": 25, "recycling": 24,
    "mineral_processing": 17, "joint_ventures_tech_transfer": 13,
}
JAPANESE_KINDS_FOR = {
    "electric_vehicles": ("private_equity", "automaker", "manufacturer", "trading_house"),
    "battery_manufacturing": ("battery_maker", "manufacturer", "trading_house", "private_equity"),
    "recycling": ("recycler", "trading_house", "manufacturer"),
    "mineral_processing": ("mineral_processor", "trading_house", "manufacturer"),
    "joint_ventures_tech_transfer": ("manufacturer", "other", "battery_maker"),
}
INDIAN_KINDS_FOR = {
    "electric_vehicles": ("automaker",),
    "battery_manufacturing": ("battery_maker", "manufacturer"),
    "recycling": ("recycler",),
    "mineral_processing": ("mineral_processor", "recycler"),
    "joint_ventures_tech_transfer": ("manufacturer", "automaker"),
}
# Deals proposed per month, October 2025 to September 2026: a ramp after the roundtable, a
# lull at the year's end, a peak around the March follow-up roundtable, a summer second wind.
DEALS_PER_MONTH = (3, 5, 2, 4, 6, 8, 4, 2, 5, 4, 3, 2)
INDIAN_SITES = (
    "Pune, Maharashtra", "Chennai, Tamil Nadu", "Sanand, Gujarat", "Hosur, Tamil Nadu",
    "Greater Noida, Uttar Pradesh", "Bengaluru, Karnataka", "Dholera, Gujarat",
    "Visakhapatnam, Andhra Pradesh", "Manesar, Haryana", "Nagpur, Maharashtra",
)
MEETING_PLACES = (
    ("New Delhi, India", IST), ("Tokyo, Japan", JST), ("Chennai, India", IST),
    ("Osaka, Japan", JST), ("Pune, India", IST), ("Bengaluru, India", IST),
    ("Nagoya, Japan", JST), ("Ahmedabad, India", IST), ("Gurugram, India", IST),
)
GOVERNMENT_BODIES = (
    "Ministry of Heavy Industries (India)", "Ministry of Mines (India)", "NITI Aayog",
    "Embassy of Japan in India", "Ministry of Economy, Trade and Industry (Japan)",
    "Invest India", "Japan External Trade Organization (JETRO)",
)
MEETING_TOPICS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("battery supply-chain working session",
     ("battery_manufacturing", "mineral_processing")),
    ("catalytic converter recycling roundtable", ("recycling",)),
    ("EV component localisation forum", ("electric_vehicles", "joint_ventures_tech_transfer")),
    ("critical minerals and rare earths consultation", ("mineral_processing",)),
    ("clean-tech investors' briefing", ("electric_vehicles", "battery_manufacturing")),
    ("hydrogen fuel-cell partnership meeting", ("joint_ventures_tech_transfer",)),
)
REVISION_REASONS = (
    "Board approved a larger first phase.", "Phase one scaled back after site survey.",
    "Currency and equipment costs re-estimated.", "Second production line added to the plan.",
    "Offtake agreement signed with an Indian automaker.", "Capacity target lowered for year one.",
    "Co-investor joined, reducing this firm's share.", "PLI incentive approved for the project.",
)
WITHDRAWAL_REASONS = (
    "Investment committee declined the final tranche.",
    "Commitment moved to another deal of the same venture.",
    "Partner could not secure the land in time.",
    "Capital reallocated after a change of parent-company strategy.",
)
CANCELLATION_REASONS = {
    "joint_venture": "Parties could not agree on control of the venture and its board.",
    "technology_transfer": "Parties could not agree on technology ownership and royalties.",
    "processing_facility": "Feedstock contracts fell through; the site will not be built.",
    "equity_investment": "Regulatory approval for the foreign investment was not obtained "
                         "in time.",
}


def _weekday_after(day: date) -> date:
    while day.weekday() >= 5:
        day += timedelta(days=1)
    return day


def _weekday_before(day: date) -> date:
    while day.weekday() >= 5:
        day -= timedelta(days=1)
    return day


def _add_months(day: date, months: int) -> date:
    month = day.month - 1 + months
    return date(day.year + month // 12, month % 12 + 1, 1)


@dataclass
class _Pledge:
    pledge_id: str
    firm: HistoryFirm
    low: int
    high: int
    currency: str
    day: date


@dataclass
class _Builder:
    rng: random.Random
    firms: dict[str, HistoryFirm]
    # The day each invented firm registers: before its first use, however late it is found.
    registration_day: dict[str, date] = field(default_factory=dict)
    events: list[tuple[datetime, int, dict[str, Any]]] = field(default_factory=list)
    # The last day the deal being generated may see an event on, and its pledges' scale.
    until: date = HISTORY_END
    scale: int = 1

    def emit(self, day: date, zone: timezone, event_id: str, type_: str,
             payload: dict[str, Any]) -> None:
        clock = time(self.rng.randint(9, 17), self.rng.choice((0, 15, 30, 45)))
        at = datetime.combine(day, clock, tzinfo=zone)
        body = {"event_id": event_id, "type": type_, "occurred_at": at.isoformat(),
                "payload": payload}
        self.events.append((at, len(self.events), body))

    def use(self, code: str, day: date) -> None:
        """Make sure the firm `code` is registered before `day` (scenario firms already are)."""
        if code in SCENARIO_CODES:
            return
        wanted = _weekday_before(max(HISTORY_START, day - timedelta(days=self.rng.randint(2, 25))))
        if wanted >= day:
            wanted = HISTORY_START
        current = self.registration_day.get(code)
        self.registration_day[code] = wanted if current is None else min(current, wanted)

    def later(self, day: date, low: int, high: int) -> date | None:
        """A weekday `low`–`high` days after `day`, or None past `until`."""
        then = _weekday_after(day + timedelta(days=self.rng.randint(low, high)))
        return then if then <= self.until else None

    def pick(self, country: str, kinds: tuple[str, ...], exclude: set[str]) -> HistoryFirm:
        pool = [f for f in self.firms.values()
                if f.country == country and f.kind in kinds and f.code not in exclude]
        if not pool:
            pool = [f for f in self.firms.values()
                    if f.country == country and f.code not in exclude]
        # The article's Indian firms lead more than their share of the deals.
        named = [f for f in pool if f.code in ARTICLE_INDIAN_FIRMS]
        if named and self.rng.random() < 0.35:
            pool = named
        return self.rng.choice(pool)


def _amount(rng: random.Random, firm: HistoryFirm, scale: int = 1) -> tuple[int, int, str]:
    """A plausible first-phase range: about $0.5–4.5M low, 1.5–4 times that high, so that a
    year on the registry holds roughly twice the article's $100–400 million."""
    ratio = rng.choice((1.5, 2, 2, 2.5, 3, 4))
    if firm.country == "IN":
        low = rng.randint(4, 38) * scale * CRORE  # ₹4–38 crore
        return low, int(low * ratio) // CRORE * CRORE, "INR"
    if firm.kind in ("private_equity", "trading_house"):
        low = rng.randint(1, 9) * scale * 500_000
        return low, int(low * ratio) // 500_000 * 500_000, "USD"
    low = rng.randint(1, 13) * scale * 50_000_000  # ¥50–650M
    return low, int(low * ratio) // 50_000_000 * 50_000_000, "JPY"


def _step(currency: str) -> int:
    return {"INR": CRORE, "USD": 500_000, "JPY": 50_000_000}[currency]


def _amount_body(low: int, high: int, currency: str) -> dict[str, str]:
    return {"low": str(low), "high": str(high), "currency": currency}


def _zone(firm: HistoryFirm) -> timezone:
    return JST if firm.country == "JP" else IST


def _register_firms(b: _Builder) -> None:
    for code in sorted(b.firms):
        if code in SCENARIO_CODES:
            continue
        if code not in b.registration_day:  # never used: joins in the first two months
            b.registration_day[code] = _weekday_after(
                HISTORY_START + timedelta(days=b.rng.randint(0, 60)))
    for code, day in sorted(b.registration_day.items()):
        firm = b.firms[code]
        b.emit(day, _zone(firm), f"{HISTORY_EVENT_ID_PREFIX}firm-{code}", "firm_registered",
               {"code": code, "name": firm.name, "country": firm.country, "kind": firm.kind})


def _meetings(b: _Builder) -> None:
    japanese = [f for f in b.firms.values() if f.country == "JP"]
    indian = [f for f in b.firms.values() if f.country == "IN"]
    number = 0
    for month in range(12):
        first = _add_months(date(2025, 10, 1), month)
        for half in (0, 1):
            day = _weekday_after(first + timedelta(days=4 + 14 * half + b.rng.randint(0, 6)))
            if not HISTORY_START + timedelta(days=3) <= day <= HISTORY_END:
                continue
            number += 1
            # The March follow-up to the article's roundtable is large and closed-door.
            follow_up = month == 5 and half == 0
            closed = follow_up or b.rng.random() < 0.45
            place, zone = ("New Delhi, India", IST) if follow_up else b.rng.choice(MEETING_PLACES)
            title, sectors = b.rng.choice(MEETING_TOPICS)
            count_jp, count_in = (24, 8) if follow_up else (b.rng.randint(3, 9),
                                                            b.rng.randint(2, 5))
            attendees = [f.code for f in b.rng.sample(japanese, count_jp)]
            attendees += [f.code for f in b.rng.sample(indian, count_in)]
            bodies: list[str] = []
            if closed:
                attendees.append(GOVERNMENT_FIRM)
                bodies = sorted(b.rng.sample(GOVERNMENT_BODIES, b.rng.randint(2, 4)))
            if follow_up:
                title, sectors = "Japan–India clean-tech roundtable, follow-up session", SECTORS
            for code in attendees:
                b.use(code, day)
            summary = (
                f"{'Closed-door' if closed else 'Open'} {title} in {place}, with "
                f"{count_jp} Japanese and {count_in} Indian firms"
                + (", attended by government officials" if closed else "")
                + f". {ILLUSTRATIVE_NOTE}"
            )
            b.emit(day, zone, f"{HISTORY_EVENT_ID_PREFIX}meeting-{number:02d}", "meeting_held", {
                "meeting_id": demo_id("meeting", f"history-{number:02d}"),
                "title": title[0].upper() + title[1:],
                "location": place,
                "closed_door": closed,
                "attendees": attendees,
                "government_bodies": bodies,
                "sectors": list(sectors),
                "summary": summary,
            })


def _deal_days(rng: random.Random) -> list[date]:
    days: list[date] = []
    for month, count in enumerate(DEALS_PER_MONTH):
        first = _add_months(date(2025, 10, 1), month)
        last = _add_months(date(2025, 10, 1), month + 1) - timedelta(days=1)
        first = max(first, HISTORY_START + timedelta(days=7))
        last = min(last, HISTORY_END - timedelta(days=10))
        span = (last - first).days
        days += [_weekday_after(first + timedelta(days=rng.randint(0, span)))
                 for _ in range(count)]
    return sorted(days)


def _deals(b: _Builder) -> None:
    rng = b.rng
    days = _deal_days(rng)
    sectors = list(SECTOR_WEIGHTS)
    # Three deals proposed before May 2026 will be cancelled: a flagship of the autumn, whose
    # pledges are six times the usual and whose end dents the totals, and two smaller ones.
    early = [n for n, day in enumerate(days, 1) if day < date(2026, 5, 1)]
    flagship = early[1]
    cancelled = {flagship, *rng.sample(early[4:], 2)}
    for number, day in enumerate(days, 1):
        sector = rng.choices(sectors, weights=[SECTOR_WEIGHTS[s] for s in sectors])[0]
        topic = rng.choice([t for t in TOPICS if t.sector == sector])
        taken: set[str] = set()
        japanese = [b.pick("JP", JAPANESE_KINDS_FOR[sector], taken)]
        taken.add(japanese[0].code)
        if rng.random() < 0.3:
            japanese.append(b.pick("JP", JAPANESE_KINDS_FOR[sector], taken))
            taken.add(japanese[1].code)
        indian = [b.pick("IN", INDIAN_KINDS_FOR[sector], taken)]
        taken.add(indian[0].code)
        if rng.random() < 0.15:
            indian.append(b.pick("IN", INDIAN_KINDS_FOR[sector], taken))
        parties = japanese + indian
        for firm in parties:
            b.use(firm.code, day)
        deal_id = demo_id("deal", f"history-{number:03d}")
        names = "–".join(f.short for f in (japanese[0], indian[0]))
        b.emit(day, rng.choice((IST, JST)), f"{HISTORY_EVENT_ID_PREFIX}deal-{number:03d}",
               "deal_proposed", {
                   "deal_id": deal_id,
                   "title": f"{names}: {topic.title}",
                   "format": topic.format,
                   "sector": sector,
                   "parties": [f.code for f in parties],
                   "description": f"{topic.description} {ILLUSTRATIVE_NOTE}",
               })
        # A deal to be cancelled sees its pledges within five months, then the end.
        b.until = min(day + timedelta(days=150), HISTORY_END - timedelta(days=80)) \
            if number in cancelled else HISTORY_END
        b.scale = 6 if number == flagship else 1
        last = _pledges(b, number, deal_id, day, japanese, indian)
        b.until, b.scale = HISTORY_END, 1
        if number in cancelled:
            when = b.later(last, 20, 60)
            assert when is not None, "cancelled deals are proposed early enough"
            b.emit(when, JST, f"{HISTORY_EVENT_ID_PREFIX}cancel-{number:03d}", "deal_cancelled",
                   {"deal_id": deal_id, "reason": CANCELLATION_REASONS[topic.format]})
        else:
            _agreements(b, number, deal_id, day, topic, japanese, indian)


def _pledges(b: _Builder, number: int, deal_id: str, day: date,
             japanese: list[HistoryFirm], indian: list[HistoryFirm]) -> date:
    """Make, revise and withdraw the deal's pledges; answer the day of the last of them."""
    rng = b.rng
    pledgers = [japanese[0]]
    if rng.random() < 0.15:
        pledgers.append(japanese[0])  # a second tranche
    pledgers += [f for f in japanese[1:] if rng.random() < 0.6]
    pledgers += [f for f in indian if rng.random() < 0.5]
    last = day
    for tranche, firm in enumerate(pledgers, 1):
        made = b.later(day, 5, 45 + 20 * tranche)
        if made is None:
            continue
        low, high, currency = _amount(rng, firm, b.scale)
        pledge = _Pledge(f"h{number:03d}-{tranche}-{firm.code}", firm, low, high, currency, made)
        payload: dict[str, Any] = {"deal_id": deal_id, "pledge_id": pledge.pledge_id,
                                   "firm": firm.code, "amount": _amount_body(low, high, currency)}
        if currency == "JPY" and rng.random() < 0.25:
            payload["rate"] = {"units_per_usd": f"{rng.randint(1420, 1580) / 10:.1f}",
                               "rate_source": "Partner treasury rate on the pledge date "
                                              "(illustrative)"}
        b.emit(made, _zone(firm), f"{HISTORY_EVENT_ID_PREFIX}pledge-{pledge.pledge_id}",
               "pledge_made", payload)
        last = max(last, made)
        last = max(last, _changes(b, deal_id, pledge))
    return last


def _changes(b: _Builder, deal_id: str, pledge: _Pledge) -> date:
    rng = b.rng
    day = pledge.day
    for revision in (1, 2):
        if rng.random() >= (0.28 if revision == 1 else 0.25):
            break
        when = b.later(day, 20, 120)
        if when is None:
            return day
        step = _step(pledge.currency)
        factor = rng.choice((0.5, 0.7, 0.8, 1.25, 1.5, 2.0))
        low = max(step, round(pledge.low * factor / step) * step)
        high = max(low, round(pledge.high * factor / step) * step)
        if (low, high) == (pledge.low, pledge.high):
            high += step
        pledge.low, pledge.high, day = low, high, when
        b.emit(when, _zone(pledge.firm),
               f"{HISTORY_EVENT_ID_PREFIX}revise-{pledge.pledge_id}-{revision}",
               "pledge_revised", {
                   "deal_id": deal_id, "pledge_id": pledge.pledge_id,
                   "amount": _amount_body(low, high, pledge.currency),
                   "reason": rng.choice(REVISION_REASONS),
               })
    if rng.random() < 0.08:
        when = b.later(day, 15, 90)
        if when is not None:
            day = when
            b.emit(when, _zone(pledge.firm),
                   f"{HISTORY_EVENT_ID_PREFIX}withdraw-{pledge.pledge_id}", "pledge_withdrawn",
                   {"deal_id": deal_id, "pledge_id": pledge.pledge_id,
                    "reason": rng.choice(WITHDRAWAL_REASONS)})
    return day


def _equity(rng: random.Random, japanese: list[HistoryFirm],
            indian: list[HistoryFirm]) -> dict[str, str]:
    indian_share = rng.choice((51, 51, 50, 60, 74, 26))
    shares: dict[str, int] = {}
    for firms, total in ((indian, indian_share), (japanese, 100 - indian_share)):
        if len(firms) == 1:
            shares[firms[0].code] = total
        else:
            first = total * rng.choice((5, 6, 7)) // 10
            shares[firms[0].code], shares[firms[1].code] = first, total - first
    return {code: str(share) for code, share in shares.items()}


def _agreements(b: _Builder, number: int, deal_id: str, day: date, topic: Topic,
                japanese: list[HistoryFirm], indian: list[HistoryFirm]) -> None:
    rng = b.rng
    prefix = HISTORY_EVENT_ID_PREFIX
    if topic.format == "joint_venture" and rng.random() < 0.65:
        when = b.later(day, 45, 220)
        if when is not None:
            venture = (f"{japanese[0].short} {indian[0].short} {VENTURE_WORDS[topic.sector]} "
                       f"Private Limited {FICTIONAL_MARKER}")
            b.emit(when, IST, f"{prefix}jv-{number:03d}", "joint_venture_formed", {
                "deal_id": deal_id, "venture_name": venture,
                "equity": _equity(rng, japanese, indian)})
    tech_transfer = topic.format == "technology_transfer" and rng.random() < 0.75
    if tech_transfer or (topic.format == "joint_venture" and rng.random() < 0.25):
        when = b.later(day, 30, 200)
        if when is not None:
            b.emit(when, IST, f"{prefix}tech-transfer-{number:03d}", "tech_transfer_signed", {
                "deal_id": deal_id, "technology": topic.detail,
                "licensor": japanese[0].code, "licensee": indian[0].code})
    if topic.format == "processing_facility" and rng.random() < 0.75:
        when = b.later(day, 40, 200)
        if when is not None:
            tonnes = rng.choice((1_000, 2_500, 5_000, 10_000, 20_000))
            b.emit(when, IST, f"{prefix}facility-{number:03d}", "facility_announced", {
                "deal_id": deal_id,
                "facility": f"{japanese[0].short}–{indian[0].short} {topic.detail.lower()}",
                "location": f"{rng.choice(INDIAN_SITES)}, India",
                "capacity": f"{tonnes:,} tonnes a year",
                "materials": list(topic.materials)})


def _scenario_follow_ups(b: _Builder) -> None:
    """Two events on the article's own deals, so the history continues the scenario."""
    b.emit(date(2026, 1, 19), JST, f"{HISTORY_EVENT_ID_PREFIX}revise-hoshi-lfp-1",
           "pledge_revised", {
               "deal_id": DEAL_IDS[BATTERY_TECH], "pledge_id": "hoshi-lfp-1",
               "amount": _amount_body(4_350_000_000, 11_600_000_000, "JPY"),
               "reason": "Pilot line commissioned; the low end of the range is firmed up.",
           })
    b.emit(date(2026, 2, 16), JST, f"{HISTORY_EVENT_ID_PREFIX}pledge-yamabuki-jv-1",
           "pledge_made", {
               "deal_id": DEAL_IDS[RECYCLING_JV], "pledge_id": "yamabuki-jv-1",
               "firm": "yamabuki-catalyst",
               "amount": _amount_body(300_000_000, 900_000_000, "JPY"),
           })


def history(seed: int = SEED) -> list[dict[str, Any]]:
    """The history's submission bodies, in business-time order; post them after `scenario()`."""
    rng = random.Random(seed)
    invented = _invented_japanese_firms(rng) + _invented_indian_firms()
    firms = {f.code: f for f in _scenario_firms() + invented}
    builder = _Builder(rng, firms)
    _meetings(builder)
    _deals(builder)
    _scenario_follow_ups(builder)
    _register_firms(builder)  # last: every firm's first use is known by now
    return [body for _, _, body in sorted(builder.events, key=lambda e: (e[0], e[1]))]
