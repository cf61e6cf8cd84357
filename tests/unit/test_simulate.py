"""How a scripted shopper (`styleloop simulate`) judges one chat answer."""

from __future__ import annotations

from styleloop.simulate import RoundReport, Shopper, Taste, judge

CATALOG = {
    "black-tee": {"item_id": "black-tee", "colour": "Black", "gender": "Men"},
    "blue-tee": {"item_id": "blue-tee", "colour": "Blue", "gender": "Men"},
    "black-cap": {"item_id": "black-cap", "colour": "Black", "gender": "Women"},
    "red-cap": {"item_id": "red-cap", "colour": "Red", "gender": "Women"},
}


def test_every_shown_card_is_judged_and_the_rate_counts_the_cited_ones():
    shopper = Shopper("s1", Taste("avoid_colour", "Black"), [])
    report = RoundReport(0)
    events = judge(
        shopper, ["blue-tee", "black-tee"], ["black-tee", "blue-tee", "black-cap", "red-cap"],
        CATALOG, report,
    )  # fmt: skip
    # Cited and "also found" alike: a like for what fits, a rejection for what does not,
    # one event per card.
    assert events == [
        ("blue-tee", "like"),
        ("black-tee", "reject"),
        ("black-cap", "reject"),
        ("red-cap", "like"),
    ]
    assert (report.recommended, report.rejected, report.rejection_rate) == (2, 1, 0.5)
    assert (report.liked, report.rejected_shown) == (2, 2)
    assert shopper.rejected == {"black-tee", "black-cap"}
    # Something fitted, so a perfect pick would have cited it.
    assert (report.with_cards, report.nothing_fits, report.one_pick_floor) == (1, 0, 0.0)


def test_an_answer_none_of_whose_cards_fits_counts_towards_the_one_pick_floor():
    shopper = Shopper("s3", Taste("brand", "Puma"), [])
    report = RoundReport(0)
    catalog = {"puma": {"item_id": "puma", "brand": "Puma"}, **CATALOG}
    judge(shopper, ["black-tee"], ["black-tee", "blue-tee"], catalog, report)
    judge(shopper, ["puma"], ["puma", "red-cap"], catalog, report)
    judge(shopper, [], [], catalog, report)  # an answer without cards (declined)
    assert (report.with_cards, report.nothing_fits) == (2, 1)
    assert report.one_pick_floor == 0.5 and report.rejection_rate == 0.5


def test_a_gender_taste_takes_unisex_and_an_unknown_item_does_not_fit():
    shopper = Shopper("s2", Taste("only_gender", "Women"), [])
    report = RoundReport(0)
    catalog = {**CATALOG, "scarf": {"item_id": "scarf", "gender": "Unisex"}}
    events = judge(shopper, ["red-cap"], ["red-cap", "scarf", "blue-tee", "gone"], catalog, report)
    assert dict(events) == {
        "red-cap": "like",
        "scarf": "like",
        "blue-tee": "reject",
        "gone": "reject",
    }
    assert (report.recommended, report.rejected) == (1, 0)


def test_a_round_asks_for_max_items_cards_and_sends_a_judgement_of_each_shown_card():
    import json

    import httpx

    from styleloop.simulate import run

    chats: list[dict] = []
    feedback: list[dict] = []

    def gateway(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        if request.url.path == "/v1/feedback":
            feedback.extend(body["events"])
            return httpx.Response(202, json={"accepted": len(body["events"])})
        chats.append(body)
        shown = list(CATALOG)[: body.get("max_items", 5)]
        events = [
            ("retrieved", {"items": [{"item": CATALOG[i]} for i in shown]}),
            ("text", {"text": "Try the blue tee [2]."}),
            ("reference", {"item_id": shown[1]}),
            ("finish", {"finish_reason": "stop", "answer_id": f"a{len(chats)}"}),
        ]
        sse = "".join(f"event: {k}\ndata: {json.dumps(d)}\n\n" for k, d in events)
        return httpx.Response(200, text=sse, headers={"content-type": "text/event-stream"})

    shopper = Shopper("s1", Taste("avoid_colour", "Black"), [["show me tees"]])
    client = httpx.Client(transport=httpx.MockTransport(gateway), base_url="http://gw")
    (report,) = run(
        client, list(CATALOG.values()), [shopper], 1, trainer_metrics="",
        round_timeout_s=5, max_new_tokens=8, progress=False, max_items=3,
    )  # fmt: skip
    assert [c["max_items"] for c in chats] == [3]
    # Three cards shown (not the chat's default five): one judgement each, the cited first.
    assert [(e["item_id"], e["kind"]) for e in feedback] == [
        ("blue-tee", "like"),
        ("black-tee", "reject"),
        ("black-cap", "reject"),
    ]
    assert {e["context"]["answer_id"] for e in feedback} == {"a1"}
    assert (report.recommended, report.rejected, report.rejected_shown) == (1, 0, 2)
