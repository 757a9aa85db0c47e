"""Object isolation: text states from which the UNet can read an object only at its own word.

CLIP's text encoder is causal, so in "a red cat on grass" the states of "on", "grass", the end token and the
padding all carry "cat". A UNet trained on such states learns to find the object (and the object's layout prior)
everywhere in the context. Prompt-to-prompt then cannot keep a layout: Replace injects the source's maps, but the
target's context states still say "bird", and the bird goes where birds usually are.

`isolate_objects` breaks that shortcut during training. For a chosen share of the captions:

- every position that is not an object word gets its state from the caption with *all* object words replaced by
  other objects at random;
- the k-th object word gets its state from the caption with every *other* object word replaced at random (its
  own word true, so color and pattern words before it still bind to it).

The object is then stated only at its own position; everything else about the caption stays true.
`isolate_attribute` does the same for one attribute word ("bumpy"), from both sides (`anneal_attribute_isolation`
in phase 4, `attribute_isolation` in phase 6; both off in the shipped recipe).
"""

from __future__ import annotations

import torch


def object_token_ids(tokenizer, words) -> torch.Tensor:
    """The token id of each word (one token per word, as the toy tokenizer has it): the object words, or the
    attribute, its noun and the filler."""
    ids = [tokenizer(w, add_special_tokens=False).input_ids for w in words]
    bad = [w for w, i in zip(words, ids) if len(i) != 1]
    if bad:
        raise ValueError(f"isolation needs one token per object word (and attribute word); {bad} split into several "
                         "tokens")
    return torch.tensor([i[0] for i in ids])


def _other_objects(ids, is_obj, object_ids, gen):
    """`ids` with each object word replaced by a different object, drawn at random."""
    lut = torch.full((int(max(ids.max(), object_ids.max())) + 1,), -1, dtype=torch.long)
    lut[object_ids] = torch.arange(len(object_ids))
    shift = torch.randint(1, len(object_ids), ids.shape, generator=gen)
    other = object_ids[(lut[ids].clamp(min=0) + shift) % len(object_ids)]
    return torch.where(is_obj, other, ids)


def isolate_objects(encode, ids: torch.Tensor, states: torch.Tensor, object_ids: torch.Tensor, share: float,
                    gen: torch.Generator, *, max_objects: int = 2) -> torch.Tensor:
    """`states` (B, L, D) of the captions `ids` (B, L), with the objects of about `share` of the captions isolated.

    `encode(ids) -> states` is the text encoder (called once for the chosen rows, with 1 + `max_objects` variants
    of each). Captions without an object word are left as they are."""
    is_obj = torch.isin(ids, object_ids)
    rows = torch.nonzero((torch.rand(len(ids), generator=gen) < share) & is_obj.any(dim=1)).squeeze(1)
    if len(rows) == 0:
        return states
    ids, is_obj = ids[rows], is_obj[rows]
    shuffled = _other_objects(ids, is_obj, object_ids, gen)
    order = is_obj.long().cumsum(dim=1) * is_obj  # k-th object word of its caption -> k (1-based), else 0
    variants = [shuffled] + [torch.where(order == k, ids, shuffled) for k in range(1, max_objects + 1)]
    encoded = encode(torch.cat(variants).to(states.device)).view(len(variants), len(rows), *states.shape[1:])
    pick = order.clamp(max=max_objects).to(states.device)  # which variant each position reads
    out = encoded.gather(0, pick[None, ..., None].expand(1, *encoded.shape[1:])).squeeze(0)
    states = states.clone()
    states[rows.to(states.device)] = out
    return states


ISOLATED_ATTRIBUTE = ("bumpy", "road")
"""The attribute word the anneal isolates (`isolate_attribute`) and the noun it describes."""


def _insert_before(ids: torch.Tensor, at: torch.Tensor, token: int) -> torch.Tensor:
    """`ids` (B, L) with `token` inserted at position `at` (B,) of each row; the last position (padding) drops out."""
    pos = torch.arange(ids.shape[1])[None]
    out = ids.gather(1, torch.where(pos <= at[:, None], pos, pos - 1))
    return torch.where(pos == at[:, None], token, out)


def isolate_attribute(encode, ids: torch.Tensor, states: torch.Tensor, word_id: int, noun_id: int, filler_id: int,
                      share: float, gen: torch.Generator):
    """`states` (B, L, D) of the captions `ids` (B, L) with one attribute word (e.g. "bumpy" before "road")
    stated only at its own position, from both sides, each for about `share` of the captions it applies to:

    - *the word alone*: in a caption with the word, every other position gets its state from the caption with a
      filler token (e.g. "a") in the word's place, so nothing after the word says it (the causal encoder would
      copy "bumpy" into "road", the end token and the padding);
    - *the context alone*: in a caption with the noun but not the word (a smooth road), the word is inserted
      before the noun for every position's state but the inserted one, which gets the filler's; the target
      picture stays the smooth one, so the context saying "bumpy" must draw nothing.

    Without the second side the UNet still reads the bumps from the context too, and scaling the word's attention
    to 0 (prompt-to-prompt reweighting) keeps them. Returns the states and two (B,) masks: the rows changed by
    the first side and by the second."""
    has_word = (ids == word_id).any(dim=1)
    word_rows = has_word & (torch.rand(len(ids), generator=gen) < share)
    context_rows = (ids == noun_id).any(dim=1) & ~has_word & (torch.rand(len(ids), generator=gen) < share)
    states = states.clone()
    if word_rows.any():
        rows = torch.nonzero(word_rows).squeeze(1)
        own = ids[rows] == word_id
        filled = encode(torch.where(own, filler_id, ids[rows]).to(states.device))
        states[rows.to(states.device)] = torch.where(own[..., None].to(states.device), states[rows.to(states.device)],
                                                     filled)
    if context_rows.any():
        rows = torch.nonzero(context_rows).squeeze(1)
        at = (ids[rows] == noun_id).int().argmax(dim=1)  # the noun's first position: the word goes there
        variants = torch.cat([_insert_before(ids[rows], at, word_id), _insert_before(ids[rows], at, filler_id)])
        said, filled = encode(variants.to(states.device)).view(2, len(rows), *states.shape[1:])
        own = (torch.arange(ids.shape[1])[None] == at[:, None])[..., None].to(states.device)
        states[rows.to(states.device)] = torch.where(own, filled, said)
    return states, word_rows, context_rows
