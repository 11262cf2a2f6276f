"""Real text for the parity check run on every export.

Queries and passages of the lengths SPLADE serves (a few words to a few hundred tokens), one text
past any max length (to exercise truncation) and an empty string (a [CLS] [SEP] row).
"""

from __future__ import annotations

QUERIES = [
    "is send in the clowns from a musical",
    "how long does it take to boil an egg",
    "symptoms of vitamin d deficiency in adults",
    "what is the capital of australia",
    "who wrote the declaration of independence",
    "difference between weather and climate",
    "how do vaccines train the immune system",
    "best way to store fresh basil",
]

PASSAGES = [
    "Send in the Clowns is a song written by Stephen Sondheim for the 1973 musical A Little Night Music, "
    "an adaptation of Ingmar Bergman's film Smiles of a Summer Night. It is a ballad from Act Two, in which "
    "the character Desiree reflects on the ironies and disappointments of her life.",
    "Canberra is the capital city of Australia. Founded following the federation of the colonies of Australia "
    "as the seat of government for the new nation, it is Australia's largest inland city. The site was chosen "
    "as a compromise between Sydney and Melbourne, the two largest cities.",
    "Vitamin D deficiency can cause bone pain, muscle weakness and fatigue, and in severe cases osteomalacia in "
    "adults or rickets in children. Risk factors include limited sun exposure, darker skin, obesity and "
    "conditions that reduce fat absorption in the gut.",
    "Weather is the state of the atmosphere at a particular place and time, such as hot or cold, wet or dry, "
    "calm or stormy. Climate is the long-term average of weather, typically over a period of thirty years, "
    "for a region.",
    "Vaccines work by exposing the immune system to a harmless piece or weakened form of a pathogen. B cells "
    "produce antibodies and memory cells are formed, so that a later infection by the real pathogen is "
    "recognised and cleared quickly.",
    "To keep basil fresh, trim the stems and stand them in a glass of water at room temperature, loosely "
    "covered with a plastic bag. Refrigeration turns the leaves black, because basil is sensitive to cold.",
    "The Declaration of Independence was drafted mainly by Thomas Jefferson and adopted by the Second "
    "Continental Congress on July 4, 1776. It announced that the thirteen American colonies regarded "
    "themselves as sovereign states no longer under British rule.",
    "A soft-boiled egg takes about six minutes in boiling water, a medium egg eight, and a hard-boiled egg "
    "ten to twelve minutes. Cooling the eggs in cold water afterwards stops the cooking and makes them "
    "easier to peel.",
]

# Past 512 tokens: checks truncation and a batch padded to max length.
LONG = " ".join(PASSAGES * 3)

EMPTY = ""


def parity_texts() -> list[str]:
    return QUERIES + PASSAGES + [LONG, EMPTY]
