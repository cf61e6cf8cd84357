"""Understanding a chat request: the conversation becomes a retrieval plan — query text,
filters and intent — with no language model involved.

Filters come from vocabularies built from the catalog itself (``GetFacets``: the brands,
article types, colours, genders, usages, seasons and years it really has), matched on
whole words, longest phrase first, with synonyms and common forms: "tee"/"t-shirt" →
Tshirts, "sneakers" → Casual Shoes or Sports Shoes, "for men"/"men's" → Men, "fw23",
"aw11", "fall 2011", "autumn-winter 2011" → season(s) + year, "ss12" → Spring/Summer 2012.

A request for what the catalog lacks — a known brand it does not carry, a garment it has
no article type for, a year or season it has no item of — is known here, before any
generation: :attr:`Plan.missing` says what, so the answer can say so plainly.

Follow-ups ("cheaper", "in black instead", "show me more") inherit the previous turn's
plan and change only what they name.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Literal

from styleloop.vocabulary import ARTICLE_TYPES, COLOURS

Intent = Literal["search", "complete_outfit", "similar", "photo"]
FIELDS = ("brand", "article_type", "category", "colour", "gender", "usage", "season", "year")

# Seasons as the catalog names them, and how shoppers and the trade write them.
SEASON_WORDS: dict[str, tuple[str, ...]] = {
    "Fall": ("fall", "autumn"),
    "Winter": ("winter",),
    "Spring": ("spring",),
    "Summer": ("summer",),
}
# Collection codes: fw23 / aw11 (fall-winter), ss12 (spring-summer), and single seasons.
SEASON_CODES: dict[str, tuple[str, ...]] = {
    "fw": ("Fall", "Winter"),
    "aw": ("Fall", "Winter"),
    "ss": ("Spring", "Summer"),
    "fa": ("Fall",),
    "wi": ("Winter",),
    "sp": ("Spring",),
    "su": ("Summer",),
}
SEASON_PAIRS: dict[str, tuple[str, ...]] = {
    "fall winter": ("Fall", "Winter"),
    "autumn winter": ("Fall", "Winter"),
    "spring summer": ("Spring", "Summer"),
}
GENDER_WORDS: dict[str, tuple[str, ...]] = {
    "Men": ("men", "mens", "men's", "man", "male", "males", "gents", "guys", "him"),
    "Women": ("women", "womens", "women's", "woman", "female", "ladies", "lady", "her"),
    "Boys": ("boys", "boy", "boy's", "boys'"),
    "Girls": ("girls", "girl", "girl's", "girls'"),
    "Unisex": ("unisex",),
}
USAGE_WORDS: dict[str, tuple[str, ...]] = {
    "Formal": ("formal", "office", "business", "work wear", "workwear"),
    "Casual": ("casual", "everyday"),
    "Sports": ("sports", "sporty", "gym", "workout", "athletic"),
    "Ethnic": ("ethnic", "traditional"),
    "Smart Casual": ("smart casual", "smart-casual"),
    "Travel": ("travel",),
}
# Extra forms for the catalog's article types beyond styleloop.vocabulary's.
ARTICLE_SYNONYMS: dict[str, tuple[str, ...]] = {
    "Casual Shoes": ("sneakers", "sneaker", "trainers", "casual shoes"),
    "Sports Shoes": ("sneakers", "sneaker", "trainers", "running shoes", "sports shoes"),
    "Tshirts": ("t shirt", "t shirts", "tee shirt", "tee shirts", "polo", "polos"),
    "Watches": ("watch", "watches"),
    "Innerwear Vests": ("vest", "vests"),
    "Sarees": ("saree", "sarees", "sari"),
}
# Garments and items shoppers ask for, in the words they use. One the catalog has no
# article type for is a request it cannot serve.
GARMENT_WORDS: dict[str, tuple[str, ...]] = {
    "swimwear": ("swimwear", "swimsuit", "swimsuits", "bikini", "bikinis", "swim trunks",
                 "bathing suit", "swimming costume"),
    "lingerie": ("lingerie", "negligee"),
    "suits": ("suit", "suits", "tuxedo", "tuxedos"),
    "raincoats": ("raincoat", "raincoats"),
    "jumpsuits": ("jumpsuit", "jumpsuits", "romper", "rompers", "overalls"),
    "pyjamas": ("pyjamas", "pajamas", "nightgown"),
    "gloves": ("gloves", "mittens"),
    "hats": ("hat", "hats", "beanie", "beanies"),
    "umbrellas": ("umbrella", "umbrellas"),
    "wedding dresses": ("wedding dress", "wedding dresses", "bridal gown"),
}  # fmt: skip
# Brands shoppers name that a catalog may or may not carry: naming one the catalog lacks
# is answered "not in the catalog", not with another brand's items.
KNOWN_BRANDS = (
    "Prada", "Gucci", "Chanel", "Louis Vuitton", "Hermes", "Dior", "Versace", "Armani",
    "Balenciaga", "Burberry", "Fendi", "Givenchy", "Valentino", "Saint Laurent", "Zara",
    "H&M", "Uniqlo", "Mango", "Gap", "Old Navy", "Shein", "Asos", "Topshop", "Primark",
    "Calvin Klein", "Tommy Hilfiger", "Ralph Lauren", "Lacoste", "Hugo Boss", "Diesel",
    "Levi's", "Levis", "Nike", "Adidas", "Puma", "Reebok", "Under Armour", "New Balance",
    "Asics", "Fila", "Converse", "Vans", "Skechers", "Timberland", "Dr. Martens", "Crocs",
    "Birkenstock", "Ugg", "Patagonia", "The North Face", "Columbia", "Moncler",
    "Michael Kors", "Coach", "Kate Spade", "Fossil", "Rolex", "Casio", "Titan", "Ray-Ban",
    "Oakley", "Benetton", "United Colors of Benetton", "Jack & Jones", "Vero Moda",
    "Wrangler", "Lee", "Pepe Jeans", "Mango", "Forever 21", "Superdry", "Guess",
)  # fmt: skip

OUTFIT_CUES = re.compile(
    r"\b(what goes with|goes with|go with|goes well with|match(es)? with|to match|"
    r"pair(ed)? with|wear with|complete (the|my|this) (look|outfit)|outfit for)\b"
)
SIMILAR_CUES = re.compile(r"\b(similar to|similar|like this|like that|more like|alike)\b")
MORE_CUES = re.compile(r"\b(show me more|more of (these|those|them)|more options|more please|"
                       r"next|others|any more|anything else)\b")  # fmt: skip
CHEAPER_CUES = re.compile(r"\b(cheaper|less expensive|lower price|budget|more affordable)\b")
INSTEAD_CUES = re.compile(r"\b(instead|rather|what about|how about|in \w+ instead)\b")
YEAR = re.compile(r"(?<![\w'])(19[89]\d|20[0-4]\d)(?![\w])")
SEASON_CODE = re.compile(r"(?<![\w])(fw|aw|ss|fa|wi|sp|su)\s?'?(\d{2}|\d{4})(?![\w])")
FILLER = frozenset(
    str.split(
        "a an the can could would you please me my i i'm im recommend recommendations "
        "suggest show find give get some any clothes clothing items item outfits outfit "
        "things stuff based on from by of for in with and or to something what is are "
        "looking want need like collection line season range style styles look looks that "
        "this these those it do does have has there also instead rather about how more "
        "anything everything"
    )
)


@dataclass(frozen=True)
class Missing:
    """A constraint the shopper asked for that no catalog item has."""

    field: str  # brand, article_type, season, year
    asked: str  # as the shopper wrote it, e.g. "Prada", "swimwear", "fw23"


@dataclass(frozen=True)
class Plan:
    """What to retrieve for one user turn."""

    intent: Intent
    query: str
    filters: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    missing: tuple[Missing, ...] = ()
    item_ids: tuple[str, ...] = ()  # the item an outfit or similarity is about
    wanted_category: str = ""  # the category that completes the outfit, if named
    page: int = 0  # "show me more" asks for the next page of the same plan
    cheaper_than: float | None = None  # "cheaper": below the previous answer's prices
    # For an outfit without a photo or a shown item: what describes the item already had
    # ("what goes with a white shirt": Shirts, White), to find it first.
    anchor_filters: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    anchor_query: str = ""
    # Words of the request no vocabulary explained ("broad" in "men broad blue shirt",
    # "lawn mower"): only then can the catalog lack what is asked while every filter holds.
    open_words: tuple[str, ...] = ()

    @property
    def knows_nothing_fits(self) -> bool:
        """True when the catalog cannot serve the request at all."""
        return bool(self.missing)

    @property
    def floor_text(self) -> str:
        """What the similarity floor is measured on: the words no vocabulary explained with
        what the filters name ("broad Shirts Blue Men"); empty when every word was
        explained (then the filters alone decide)."""
        if not self.open_words:
            return ""
        return " ".join([*self.open_words, *(values[0] for values in self.filters.values())])

    def search_text(self, message: str) -> str:
        """What a text search asks: the plan's words, else the message as written."""
        return self.query.strip() or message.strip()


@dataclass(frozen=True)
class Turn:
    role: Literal["user", "assistant"]
    text: str
    item_ids: tuple[str, ...] = ()  # items an assistant turn showed (or a user attached)
    prices: tuple[float, ...] = ()  # the shown items' prices, for "cheaper"


def normalise(text: str) -> str:
    """Lower case, one space, hyphens and slashes as spaces, apostrophes kept."""
    text = text.lower().replace("’", "'")
    text = re.sub(r"[-/_]", " ", text)
    text = re.sub(r"[^\w'&. ]+", " ", text)
    return " ".join(text.split())


def _forms(value: str) -> set[str]:
    """How a shopper may write a catalog value: "Tshirts" → tshirts, tshirt."""
    base = normalise(value)
    forms = {base, base.replace(" ", "")}
    for form in list(forms):
        if form.endswith("es") and form[:-2].endswith(("sh", "ch", "ss", "x")):
            forms.add(form[:-2])
        elif form.endswith("s") and not form.endswith("ss"):
            forms.add(form[:-1])
    return {f for f in forms if len(f) > 1}


def _pattern(phrase: str) -> re.Pattern[str]:
    return re.compile(r"(?<![\w'&])" + re.escape(phrase) + r"(?![\w&])")


class _Matcher:
    """Phrases → canonical values, matched on whole words, longest phrase first; a
    matched span is not matched again by a shorter phrase."""

    def __init__(self, table: Mapping[str, Iterable[str]]) -> None:
        pairs = {(normalise(p), v) for v, phrases in table.items() for p in phrases if p}
        self.entries = sorted(
            ((_pattern(p), p, v) for p, v in pairs), key=lambda e: (-len(e[1]), e[1], e[2])
        )

    def find(self, text: str, taken: list[tuple[int, int]]) -> list[tuple[str, str]]:
        """(value, phrase) found in ``text``; spans used are added to ``taken``."""
        found: list[tuple[str, str]] = []
        mine: dict[tuple[int, int], str] = {}  # spans this call took, by phrase
        for pattern, phrase, value in self.entries:
            for match in pattern.finditer(text):
                span = match.span()
                if mine.get(span) == phrase:  # one phrase, several values ("sneakers")
                    found.append((value, phrase))
                    continue
                if any(span[0] < end and start < span[1] for start, end in taken):
                    continue
                found.append((value, phrase))
                taken.append(span)
                mine[span] = phrase
        return found


@dataclass
class Vocabulary:
    """What the catalog has, field by field (value → item count), from ``GetFacets``."""

    values: dict[str, dict[str, int]]

    def __post_init__(self) -> None:
        have = {name: set(self.values.get(name, {})) for name in FIELDS}
        articles: dict[str, set[str]] = {v: _forms(v) for v in have["article_type"]}
        for value, (_, phrases) in ARTICLE_TYPES.items():
            if value in articles:
                articles[value] |= set(phrases)
        for value, phrases in ARTICLE_SYNONYMS.items():
            if value in articles:
                articles[value] |= set(phrases)
        colours: dict[str, set[str]] = {v: _forms(v) for v in have["colour"]}
        for value, phrases in COLOURS.items():
            if value in colours:
                colours[value] |= set(phrases)
        self.brand_families, brand_phrases = _brand_table(have["brand"])
        self.brands = _Matcher(brand_phrases)
        self.articles = _Matcher(articles)
        self.colours = _Matcher(colours)
        self.genders = _Matcher({v: (*GENDER_WORDS.get(v, ()), *_forms(v)) for v in have["gender"]})
        self.usages = _Matcher({v: (*USAGE_WORDS.get(v, ()), *_forms(v)) for v in have["usage"]})
        self.categories = _Matcher({v: _forms(v) for v in have["category"]})
        carried = {normalise(b) for b in have["brand"]}
        self.absent_brands = _Matcher(
            {b: (normalise(b),) for b in KNOWN_BRANDS if normalise(b) not in carried}
        )
        served = {phrase for phrases in articles.values() for phrase in phrases}
        self.absent_garments = _Matcher(
            {g: [w for w in words if w not in served] for g, words in GARMENT_WORDS.items()}
        )
        self.seasons = have["season"]
        self.years = have["year"]

    @classmethod
    def from_facets(cls, facets: Mapping[str, Sequence[tuple[str, int]]]) -> Vocabulary:
        return cls({name: dict(values) for name, values in facets.items()})


# Catalog brand names that are everyday words too: a brand only when capitalised.
AMBIGUOUS_BRANDS = frozenset(
    str.split(
        "and ant w id image ice cat diva basics police genesis mr. mr turtle doodle gas "
        "idee lee vans guess catwalk tantra chimp playboy superman disney batman myntra "
        "campbell murcia crusoe"
    )
)


def _brand_table(values: Iterable[str]) -> tuple[dict[str, tuple[str, ...]], dict[str, set[str]]]:
    """Brand phrases and, for each, every catalog value of that brand: "adidas" → ADIDAS,
    ADIDAS Originals, ADIDAS Black (titles name lines and colours after the brand)."""
    colour_words = {normalise(p) for phrases in COLOURS.values() for p in phrases}
    colour_words |= {normalise(c) for c in COLOURS}
    keys = {v: normalise(v) for v in values if normalise(v)}
    phrases: dict[str, set[str]] = {}
    for key in set(keys.values()):
        words = key.split()
        if len(words) > 1 and words[-1] in colour_words:
            continue  # "adidas black" is adidas + the colour black
        phrases.setdefault(key, set()).update(f for f in _forms(key) if len(f) > 1)
    families = {
        phrase: tuple(
            sorted(v for v, k in keys.items() if k == phrase or k.startswith(phrase + " "))
        )
        for phrase in phrases
    }
    return families, {phrase: {phrase, *forms} for phrase, forms in phrases.items()}


def _seasons_and_years(
    text: str, taken: list[tuple[int, int]]
) -> tuple[list[str], list[str], list[str]]:
    """Seasons, years and the phrases that named them ("fw23", "fall 2011", "2011")."""
    seasons: list[str] = []
    years: list[str] = []
    phrases: list[str] = []

    def year_of(digits: str) -> str:
        return digits if len(digits) == 4 else f"20{digits}"

    def use(span: tuple[int, int], phrase: str) -> None:
        taken.append(span)
        phrases.append(phrase)

    for match in SEASON_CODE.finditer(text):
        seasons += SEASON_CODES[match.group(1)]
        years.append(year_of(match.group(2)))
        use(match.span(), match.group(0))
    for pair, values in SEASON_PAIRS.items():
        for match in _pattern(pair).finditer(text):
            seasons += values
            use(match.span(), pair)
    for value, words in SEASON_WORDS.items():
        for word in words:
            for match in _pattern(word).finditer(text):
                if not any(match.start() < e and s < match.end() for s, e in taken):
                    seasons.append(value)
                    use(match.span(), word)
    for match in YEAR.finditer(text):
        if not any(match.start() < e and s < match.end() for s, e in taken):
            years.append(match.group(1))
            use(match.span(), match.group(1))
    # "fall 11" / "summer '12": a two-digit year right after a season word.
    for match in re.finditer(
        r"(?<![\w])(fall|autumn|winter|spring|summer) '?(\d{2})(?![\w])", text
    ):
        years.append(year_of(match.group(2)))
        phrases.append(match.group(0))
    return list(dict.fromkeys(seasons)), list(dict.fromkeys(years)), phrases


def _constraints(
    text: str, message: str, vocabulary: Vocabulary
) -> tuple[dict[str, list[str]], list[Missing], list[str]]:
    """Filters named in ``text`` (normalised), what the catalog lacks, and the words left
    over for the query text."""
    taken: list[tuple[int, int]] = []
    filters: dict[str, list[str]] = {}
    missing: list[Missing] = []

    def add(name: str, values: Iterable[str]) -> None:
        for value in values:
            if value not in filters.setdefault(name, []):
                filters[name].append(value)

    seasons, years, season_phrases = _seasons_and_years(text, taken)
    asked_time = " ".join(season_phrases)
    known_years = [y for y in years if y in vocabulary.years]
    if years and not known_years:
        missing.append(Missing("year", asked_time or years[0]))
    known_seasons = [s for s in seasons if s in vocabulary.seasons]
    if seasons and not known_seasons:
        missing.append(Missing("season", asked_time or seasons[0]))
    add("year", known_years)
    add("season", known_seasons)
    for phrase, _ in vocabulary.brands.find(text, taken):
        written = phrase[0].upper() + phrase[1:]
        if phrase in AMBIGUOUS_BRANDS and not re.search(
            r"(?<!\w)" + re.escape(written) + r"(?!\w)", message
        ):
            continue  # "and", "basics", "ice" … name a brand only when written as one
        add("brand", vocabulary.brand_families[phrase])
    for brand, _ in vocabulary.absent_brands.find(text, taken):
        missing.append(Missing("brand", brand))
    add("article_type", (v for v, _ in vocabulary.articles.find(text, taken)))
    for _garment, phrase in vocabulary.absent_garments.find(text, taken):
        missing.append(Missing("article_type", phrase))
    add("category", (v for v, _ in vocabulary.categories.find(text, taken)))  # "shoes"
    add("colour", (v for v, _ in vocabulary.colours.find(text, taken)))
    add("gender", (v for v, _ in vocabulary.genders.find(text, taken)))
    add("usage", (v for v, _ in vocabulary.usages.find(text, taken)))

    spans_text = "".join(
        " " if any(s <= i < e for s, e in taken) else c for i, c in enumerate(text)
    )
    # Left-over words, without what a match leaves of them (a brand's "'s", a full stop).
    # The "'s" goes first: stripping the quote first left "s" of "Arrow's" as a word,
    # which the similarity floor then measured (and refused a servable question for).
    words = (re.sub(r"^[^\w]+|[^\w]+$", "", re.sub(r"[’']s$", "", w)) for w in spans_text.split())
    return filters, missing, [w for w in words if w and w not in FILLER]


def plan_turn(
    message: str,
    vocabulary: Vocabulary,
    *,
    previous: Plan | None = None,
    shown: Turn | None = None,
    photo_item_id: str = "",
) -> Plan:
    """The retrieval plan for one user message, given the previous turn's plan (and what
    the assistant showed then) for follow-ups."""
    text = normalise(message)
    cue = OUTFIT_CUES.search(text)
    if cue:  # "what shoes go with my white shirt": before the cue is wanted, after is had
        filters, missing, query_words = _constraints(text[: cue.start()], message, vocabulary)
        anchor, anchor_missing, anchor_words = _constraints(text[cue.end() :], message, vocabulary)
        missing += anchor_missing
    else:
        filters, missing, query_words = _constraints(text, message, vocabulary)
        anchor, anchor_words = {}, []
    words = [w for w in text.split() if w not in FILLER]

    intent: Intent = "search"
    item_ids: tuple[str, ...] = ()
    if cue:
        intent = "complete_outfit"
    elif SIMILAR_CUES.search(text):
        intent = "similar"
    elif photo_item_id:
        intent = "photo"
    if intent in ("complete_outfit", "similar"):
        if photo_item_id:
            item_ids = (photo_item_id,)
        elif shown is not None and shown.item_ids:
            item_ids = shown.item_ids[:1]  # "what goes with it": the first shown item

    wanted_category = ""  # CompleteOutfit's slot: a category ("Shoes"), not an article type
    if intent == "complete_outfit":
        named = filters.get("category") or [
            ARTICLE_TYPES[a][0] for a in filters.get("article_type", []) if a in ARTICLE_TYPES
        ]
        wanted_category = named[0] if named else ""
    query = " ".join(query_words) or " ".join(vs[0] for vs in filters.values() if vs)
    query = query or " ".join(words) or text

    follow_up = previous is not None and (
        bool(MORE_CUES.search(text) or CHEAPER_CUES.search(text) or INSTEAD_CUES.search(text))
        or (not words and not filters)
    )
    plan = Plan(
        intent=intent,
        query=query,
        filters={k: tuple(v) for k, v in filters.items() if v},
        missing=tuple(missing),
        item_ids=item_ids,
        wanted_category=wanted_category,
        anchor_filters={k: tuple(v) for k, v in anchor.items() if v},
        anchor_query=" ".join(anchor_words) or " ".join(vs[0] for vs in anchor.values() if vs),
        open_words=tuple(query_words),
    )
    if not follow_up or previous is None:
        return plan
    merged = {**previous.filters, **plan.filters}  # what this turn names replaces
    page = previous.page + 1 if MORE_CUES.search(text) else 0
    cheaper = previous.cheaper_than
    if CHEAPER_CUES.search(text):
        prices = [p for p in (shown.prices if shown else ()) if p > 0]
        cheaper = min(prices) if prices else cheaper
    return replace(
        previous,
        filters=merged,
        missing=plan.missing or previous.missing,
        page=page,
        cheaper_than=cheaper,
        # A follow-up keeps the earlier query, or its own words when there was none.
        query=(
            previous.query if not query_words else f"{previous.query} {' '.join(query_words)}"
        ).strip()
        or plan.query,
        intent=plan.intent if plan.intent != "search" else previous.intent,
        item_ids=plan.item_ids or previous.item_ids,
        open_words=previous.open_words + plan.open_words,
    )


def plan_conversation(
    turns: Sequence[Turn], vocabulary: Vocabulary, photo_item_id: str = ""
) -> Plan:
    """The plan for the last user turn, earlier turns applied in order (follow-ups)."""
    plan: Plan | None = None
    shown: Turn | None = None
    users = [i for i, t in enumerate(turns) if t.role == "user"]
    if not users or users[-1] != len(turns) - 1:
        raise ValueError("the conversation must end with the user's message")
    for i, turn in enumerate(turns):
        if turn.role == "assistant":
            shown = turn
            continue
        last = i == users[-1]
        plan = plan_turn(
            turn.text,
            vocabulary,
            previous=plan,
            shown=shown,
            photo_item_id=photo_item_id if last else "",
        )
    assert plan is not None
    return plan
