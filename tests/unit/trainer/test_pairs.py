"""Preference pairs from one served chat answer and its feedback: the two answers of a
pair cite one card each, in the form the served answer has."""

from __future__ import annotations

from services.llm.cards import CardItem, History, build_messages
from services.trainer.core import pairs_for
from services.trainer.ledger import AnswerFeedback
from styleloop.v1 import common_pb2, events_pb2

ITEMS = [
    CardItem("black-tee", "Nike Men Black Tshirt", colour="Black", caption="a black tee"),
    CardItem("blue-tee", "Puma Men Blue Tshirt", colour="Blue", season="Fall", year="2011"),
    CardItem("red-tee", "Puma Men Red Tshirt", colour="Red", usage="Sports"),
]


def turn(text: str) -> events_pb2.ChatTurnEvent:
    history = History(rejected=[CardItem("old", "Adidas Men Black Jacket")])
    messages = build_messages("show me tshirts", ITEMS, history=history)
    return events_pb2.ChatTurnEvent(
        event_id="t1",
        answer_id="a1",
        user_id="u1",
        prompt=[events_pb2.ChatTurnMessage(role=r, content=c) for r, c in messages],
        cards=[
            events_pb2.ChatCard(number=n, item=common_pb2.Item(item_id=i.item_id, title=i.title))
            for n, i in enumerate(ITEMS, 1)
        ],
        text=text,
        cited_item_ids=["black-tee"],
    )


FEEDBACK = [
    AnswerFeedback("f1", "black-tee", "reject"),
    AnswerFeedback("f2", "blue-tee", "like"),
    AnswerFeedback("f3", "red-tee", "like"),
]


def test_a_model_that_lists_cards_gets_pairs_of_card_lines_as_it_read_them():
    # The offline base model answers by repeating the cards' lines, so it picks a card at
    # its first token after "[": the pairs' answers are those lines, word for word.
    served = turn("[1] Nike Men Black Tshirt; looks: a black tee\n[2] Puma Men Blue")
    pairs = pairs_for(served, FEEDBACK, eval_percent=0, created=0.0)
    user = served.prompt[1].content
    by_chosen = {p.chosen_item_id: p for p in pairs}
    assert sorted(by_chosen) == ["blue-tee", "red-tee"]
    blue, red = by_chosen["blue-tee"], by_chosen["red-tee"]
    assert blue.chosen == "[2] Puma Men Blue Tshirt; Fall 2011" and blue.chosen in user
    assert red.chosen == "[3] Puma Men Red Tshirt; Sports" and red.chosen in user
    assert blue.rejected == red.rejected == "[1] Nike Men Black Tshirt; looks: a black tee"
    assert all(p.rejected_item_id == "black-tee" and p.split == "train" for p in pairs)
    # The history's lines are no card's: nothing is taken from them.
    assert "Adidas" not in blue.chosen + blue.rejected


def test_any_other_wording_gets_the_stylist_sentence():
    served = turn("Try the Nike Men Black Tshirt [1].")
    pairs = pairs_for(served, FEEDBACK[:2], eval_percent=0, created=0.0)
    assert [(p.chosen, p.rejected) for p in pairs] == [
        ("Try the Puma Men Blue Tshirt [2].", "Try the Nike Men Black Tshirt [1].")
    ]
