"""Deterministic synthetic dataset with planted multi-interest structure.

Generative story (all randomness from one ``numpy.random.default_rng(seed)``):

* Items are split into ``n_interests`` topic clusters of near-equal size. Each topic has its own
  vocabulary, so titles carry the topic ("Space Laser Saga 12"); ``item_categories`` holds the topic.
* Inside a topic, items form a fixed random *chain* and have Zipf-like popularity.
* Each user has 2–3 favourite topics. At every step the user stays in the current topic with
  probability ``persistence`` or switches to another favourite; with probability ``noise`` the step
  is a random item from any topic. Within the chosen topic the next item is, with probability
  ``chain_prob``, the next unseen item along the chain after the user's last item of that topic,
  otherwise a popularity-weighted unseen item of the topic.

So the next item is predictable from the recent items (topic persistence + chain successor), and a
user's history mixes 2–3 interests — a multi-interest model should beat popularity clearly.
"""
from __future__ import annotations

import numpy as np

from training.datasets.base import PAD_TOKEN, InteractionData

# One vocabulary per topic: (adjectives, nouns, series words). Cycled when n_interests > len.
_TOPICS: tuple[tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]], ...] = (
    (("Space", "Galactic", "Stellar", "Orbital"), ("Laser", "Rocket", "Nebula", "Starship"), ("Saga", "Odyssey")),
    (("Haunted", "Dark", "Cursed", "Silent"), ("Manor", "Crypt", "Shadow", "Ghost"), ("Chronicles", "Tales")),
    (("Royal", "Medieval", "Ancient", "Noble"), ("Castle", "Knight", "Crown", "Dragon"), ("Legends", "Quest")),
    (("Speedy", "Turbo", "Street", "Nitro"), ("Racer", "Drift", "Circuit", "Engine"), ("Rally", "Cup")),
    (("Gourmet", "Rustic", "Spicy", "Sweet"), ("Kitchen", "Bakery", "Noodle", "Pastry"), ("Cookbook", "Recipes")),
    (("Tropical", "Wild", "Jungle", "Coastal"), ("Safari", "Parrot", "Reef", "Tiger"), ("Expedition", "Guide")),
    (("Quantum", "Digital", "Neural", "Cyber"), ("Circuit", "Robot", "Matrix", "Code"), ("Manual", "Protocol")),
    (("Jazzy", "Acoustic", "Electric", "Mellow"), ("Guitar", "Piano", "Rhythm", "Melody"), ("Sessions", "Album")),
)


def _titles(rng: np.random.Generator, topic_of: np.ndarray) -> list[str]:
    """One title per item (index 1..n): topic words + a per-topic running number (unique titles)."""
    counters: dict[int, int] = {}
    titles = [""]
    for t in topic_of[1:]:
        adj, noun, series = _TOPICS[int(t) % len(_TOPICS)]
        counters[int(t)] = counters.get(int(t), 0) + 1
        suffix = "" if t < len(_TOPICS) else f" {int(t) // len(_TOPICS) + 1}"  # keep topics distinct
        titles.append(
            f"{adj[rng.integers(len(adj))]} {noun[rng.integers(len(noun))]} "
            f"{series[rng.integers(len(series))]}{suffix} {counters[int(t)]}"
        )
    return titles


def synthetic(
    n_users: int = 300,
    n_items: int = 400,
    n_interests: int = 6,
    seed: int = 0,
    long_users: int = 5,
    long_length: int = 1200,
    min_length: int = 20,
    max_length: int = 80,
    persistence: float = 0.8,
    chain_prob: float = 0.6,
    noise: float = 0.03,
    zipf: float = 1.0,
) -> InteractionData:
    """Generate a deterministic multi-interest dataset (same arguments → identical data).

    Args:
        n_users: number of users; the first ``long_users`` of them get ``long_length`` interactions.
        n_items: number of items (indices 1..n_items), split into ``n_interests`` topics.
        n_interests: number of topic clusters.
        long_users: users with ``long_length`` (≥ 1,000 by default) interactions, to exercise long histories.
        min_length, max_length: length range (uniform) of the other users' sequences.
        persistence: probability of staying in the current topic at each step.
        chain_prob: probability that the next item is the chain successor inside the topic.
        noise: probability of a uniformly random item (any topic).
        zipf: exponent of the within-topic popularity ``1 / rank**zipf``.

    Returns:
        InteractionData with ``item_texts`` (titles) and ``item_categories`` (``int64 [n_items+1]``,
        topic per item, -1 for padding); timestamps are increasing unix seconds.
    """
    if n_interests < 1 or n_items < 2 * n_interests:
        raise ValueError("need n_interests >= 1 and at least 2 items per topic")
    if not 0 <= long_users <= n_users:
        raise ValueError("long_users must be in 0..n_users")
    rng = np.random.default_rng(seed)
    topic_of = np.full(n_items + 1, -1, dtype=np.int64)
    topic_of[1:] = rng.permutation(np.arange(n_items) % n_interests)
    members = [np.flatnonzero(topic_of == t) for t in range(n_interests)]
    chains = [rng.permutation(m) for m in members]  # chain order inside each topic
    chain_pos = np.zeros(n_items + 1, dtype=np.int64)
    for ch in chains:
        chain_pos[ch] = np.arange(len(ch))
    pops = []
    for m in members:  # Zipf popularity over a random ranking of the topic's items
        w = 1.0 / (1.0 + rng.permutation(len(m))) ** zipf
        pops.append(w / w.sum())

    sequences, timestamps = [], []
    for u in range(n_users):
        length = long_length if u < long_users else int(rng.integers(min_length, max_length + 1))
        favs = rng.choice(n_interests, size=min(n_interests, int(rng.integers(2, 4))), replace=False)
        seen = np.zeros(n_items + 1, dtype=bool)
        last_in_topic: dict[int, int] = {}
        topic = int(rng.choice(favs))
        seq = np.empty(length, dtype=np.int64)
        for step in range(length):
            if rng.random() < noise:
                item = int(rng.integers(1, n_items + 1))
            else:
                if topic not in favs:  # after a noise item, come back to a favourite
                    topic = int(rng.choice(favs))
                elif step and len(favs) > 1 and rng.random() >= persistence:
                    topic = int(rng.choice(favs[favs != topic]))
                item = _next_in_topic(rng, topic, chains[topic], members[topic], pops[topic],
                                      chain_pos, last_in_topic.get(topic), seen, chain_prob)
            seq[step] = item
            seen[item] = True
            last_in_topic[int(topic_of[item])] = item
            topic = int(topic_of[item])  # a noise item may start a new interest streak
        gaps = rng.integers(60, 3 * 86400, size=length)
        timestamps.append(1_600_000_000 + int(rng.integers(0, 86400 * 365)) + np.cumsum(gaps).astype(np.int64))
        sequences.append(seq)

    item_ids = [PAD_TOKEN] + [f"i{i}" for i in range(1, n_items + 1)]
    data = InteractionData(
        name="synthetic",
        sequences=sequences,
        timestamps=timestamps,
        user_ids=[f"u{u}" for u in range(n_users)],
        item_ids=item_ids,
        item_texts=_titles(rng, topic_of),
        item_categories=topic_of,
    )
    data.validate()
    return data


def _next_in_topic(
    rng: np.random.Generator,
    topic: int,
    chain: np.ndarray,
    members: np.ndarray,
    pop: np.ndarray,
    chain_pos: np.ndarray,
    last: int | None,
    seen: np.ndarray,
    chain_prob: float,
) -> int:
    """Pick the next item inside ``topic``; prefers unseen items, repeats only when all were seen."""
    unseen = ~seen[members]
    if last is not None and rng.random() < chain_prob:
        n = len(chain)
        start = chain_pos[last] + 1
        for off in range(n):  # next unseen item along the chain (wraps around)
            cand = int(chain[(start + off) % n])
            if not seen[cand]:
                return cand
    if unseen.any():
        p = pop * unseen
        return int(rng.choice(members, p=p / p.sum()))
    return int(rng.choice(members, p=pop))
