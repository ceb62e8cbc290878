"""webdataset pipelines: raw samples (:mod:`hyvl.data.shards`) -> (shuffle) -> batches of decoded
samples.

Design for exact resume. Each (rank, logical worker) reads its own deterministic stream of raw
samples (shard order and shuffle buffer seeded from ``(seed, rank, worker)``), groups RAW samples
into batches, and seeds augmentation and box choice from ``(seed, rank, worker, batch index)``.
Resuming at step N therefore only has to drop the first raw batches of each stream, which needs
tar reading but no image decoding (``skip_first_batches`` would decode everything, docs/pitfalls.md).
DataLoader workers are visited round-robin starting at worker 0, so on resume physical worker w
plays logical worker ``(w + N) % W``: the first batch out is exactly batch N.

A sample that fails to decode is dropped from its batch and counted (so a batch can be a few
samples short; the objectives handle unequal batches). Nothing is dropped silently: every
batch carries the counts of what was skipped while making it, and the loader totals them.
A raw batch with no usable sample still comes out (empty), so it is counted and keeps its
place in the stream. Nothing loops forever: a stream that reads no sample from any of its
shards, or only unusable samples for ``max_unusable`` samples in a row, raises
:class:`DataError` with the counts and what to change.
"""

from __future__ import annotations

import itertools
import logging
import math
import random
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import torch

from hyvl.config import DataConfig
from hyvl.data.batch import Batch
from hyvl.data.layouts import Sample, Skip, parse_sample
from hyvl.data.shards import expand_shards, one_line, raw_samples, readable_samples
from hyvl.errors import DataError

log = logging.getLogger(__name__)


def _seeded(*parts: Any) -> random.Random:
    # A string seed goes through SHA-512: identical on every machine and Python hash seed.
    return random.Random("-".join(str(p) for p in parts))


def _shuffled(samples: Iterator[dict], size: int, rng: random.Random) -> Iterator[dict]:
    """Reservoir-style shuffle buffer with our own seeded RNG (webdataset's reseeds per pid)."""
    if size <= 1:
        yield from samples
        return
    buf: list[dict] = []
    for s in samples:
        buf.append(s)
        if len(buf) >= size:
            i = rng.randrange(len(buf))
            buf[i], buf[-1] = buf[-1], buf[i]
            yield buf.pop()
    rng.shuffle(buf)
    yield from buf


# ------------------------------------------------------------------------------------------
# Decoding a batch
# ------------------------------------------------------------------------------------------


class Decoder:
    """Raw samples -> Batch: parse the layout, crop boxes, augment, tokenize."""

    def __init__(
        self,
        *,
        image_size: int,
        tokenizer: Any,
        train: bool,
        boxes_per_sample: int,
        layout: str = "auto",
        min_box_size: int = 0,
        rrc_scale: tuple[float, float] = (0.5, 1.0),
        draft: int = 0,
    ):
        from hyvl.models.transforms import image_transform, stack_images

        # PIL out; each batch is converted to a tensor at once.
        self.transform = image_transform(image_size, train=train, scale=rrc_scale, to_tensor=False)
        self.stack = stack_images
        self.tokenizer = tokenizer
        self.train = train
        self.k = boxes_per_sample
        self.layout = layout
        self.min_box_size = min_box_size
        self.draft = draft

    def parse(self, raw: dict, skipped: Counter, dropped: Counter, notes: dict) -> Sample | None:
        key = raw.get("__key__")
        try:
            sample, drops = parse_sample(raw, self.layout, self.min_box_size, self.draft)
        except Skip as skip:
            skipped[skip.reason] += 1
            notes.setdefault(skip.reason, one_line(f"sample {key}: {skip}"))
            return None
        dropped.update(drops)
        if self.k > 0 and sample.num_boxes == 0:
            skipped["no_usable_box"] += 1
            why = ", ".join(sorted(set(drops))) or "no boxes in the sample"
            notes.setdefault("no_usable_box", f"sample {key}: {why}")
            return None
        return sample

    def _boxes(self, sample: Sample, rng: random.Random):
        """k (crop, text) pairs: chosen at random (seeded) for training, the first k for eval."""
        items: list = [("box", b) for b in sample.boxes] + [("crop", c) for c in sample.box_crops]
        if self.train:
            chosen = (
                [rng.choice(items) for _ in range(self.k)]
                if len(items) < self.k
                else (rng.sample(items, self.k))
            )
        else:
            chosen = [items[i % len(items)] for i in range(self.k)]
        out = []
        for kind, item in chosen:
            if kind == "box":
                (x1, y1, x2, y2), text = item
                crop = sample.image.crop((round(x1), round(y1), round(x2), round(y2)))
            else:
                crop, text = item
            out.append((crop, text))
        return out

    def __call__(self, raws: list[dict], rng: random.Random) -> Batch:
        """The batch of the usable samples among ``raws`` (empty when none is usable)."""
        skipped: Counter = Counter()
        dropped: Counter = Counter()
        notes: dict[str, str] = {}
        parsed = (self.parse(r, skipped, dropped, notes) for r in raws)
        samples = [s for s in parsed if s is not None]
        if not samples:
            return Batch.empty(skipped, dropped, notes)
        images = self.stack([self.transform(s.image) for s in samples])
        captions = [s.caption for s in samples]
        batch = Batch(
            images=images,
            tokens=self.tokenizer(captions),
            keys=[s.key for s in samples],
            captions=captions,
            skipped=dict(skipped),
            dropped_boxes=dict(dropped),
            notes=notes,
        )
        if all(s.label is not None for s in samples):
            batch.labels = torch.tensor([s.label for s in samples], dtype=torch.long)
        if self.k > 0:
            pairs = [p for s in samples for p in self._boxes(s, rng)]
            batch.box_images = self.stack([self.transform(c) for c, _ in pairs])
            batch.box_texts = [t for _, t in pairs]
            batch.box_tokens = self.tokenizer(batch.box_texts)
        return batch


# ------------------------------------------------------------------------------------------
# Training stream
# ------------------------------------------------------------------------------------------


class TrainStream(torch.utils.data.IterableDataset):
    """Infinite stream of training batches for one rank (see the module docstring)."""

    def __init__(
        self,
        urls,
        decoder,
        *,
        batch_size,
        seed,
        rank,
        world_size,
        workers,
        resampled,
        shuffle_buffer,
        start_step,
    ):
        super().__init__()
        self.urls, self.decoder = urls, decoder
        self.batch_size, self.seed = batch_size, seed
        self.rank, self.world_size = rank, world_size
        self.workers = max(1, workers)
        self.resampled, self.shuffle_buffer = resampled, shuffle_buffer
        self.start_step = start_step

    def _samples(self, logical: int, counts: Counter, notes: dict) -> Iterator[dict]:
        """Raw samples for one logical worker, shuffled through the buffer.

        Finite mode shuffles each epoch on its own (the buffer drains at the epoch's end), so
        the first epoch's samples are exactly this slot's shards, each sample once.
        """
        shuffle_rng = _seeded(self.seed, self.rank, logical, "shuffle")
        if self.resampled:
            rng = _seeded(self.seed, self.rank, logical, "shards")
            shards = iter(lambda: rng.choice(self.urls), None)
            yield from _shuffled(
                readable_samples(shards, len(self.urls), counts, notes),
                self.shuffle_buffer,
                shuffle_rng,
            )
            return
        slots = self.world_size * self.workers
        slot = self.rank * self.workers + logical
        mine = len(self.urls[slot::slots])
        for epoch in itertools.count():
            order = list(self.urls)
            _seeded(self.seed, "epoch", epoch).shuffle(order)
            shards = readable_samples(order[slot::slots], mine, counts, notes)
            yield from _shuffled(shards, self.shuffle_buffer, shuffle_rng)

    def __iter__(self) -> Iterator[Batch]:
        info = torch.utils.data.get_worker_info()
        physical = info.id if info is not None else 0
        logical = (physical + self.start_step) % self.workers
        # loader items i < start_step with i % W == logical were already consumed
        done = max(0, math.ceil((self.start_step - logical) / self.workers))
        counts: Counter = Counter()
        notes: dict[str, str] = {}
        samples = self._samples(logical, counts, notes)
        index = 0
        try:
            while True:
                raws = [r for _, r in zip(range(self.batch_size), samples, strict=False)]
                if not raws:
                    return
                if index < done:  # consumed before the resume, its skips counted then
                    index += 1
                    counts.clear()
                    notes.clear()
                    continue
                # Augmentation (torch RNG) and box choice are seeded by the batch's position.
                with torch.random.fork_rng(devices=[]):
                    torch.manual_seed(_seeded(self.seed, self.rank, logical, index).getrandbits(63))
                    batch = self.decoder(raws, _seeded(self.seed, self.rank, logical, index, "box"))
                index += 1
                batch.skipped = dict(Counter(batch.skipped) + counts)
                batch.notes = {**notes, **batch.notes}
                counts.clear()
                notes.clear()
                yield batch  # empty when nothing in ``raws`` was usable: counted, position kept
        except DataError as err:
            # Raised in a loader worker, it would reach the user wrapped in a traceback:
            # hand it to the main process as data instead (CountingLoader raises it).
            yield Batch.empty(counts, notes=notes, error=str(err))


SKIP_HINTS = {
    "no_usable_box": "the recipe needs boxes (data.boxes_per_sample>0): use shards with "
    "boxes, or a recipe without them (data.boxes_per_sample=0 with objective.kind=meru or clip)",
    "corrupt_image": "the images do not decode: check the shards with `hyvl data stats`",
    "missing_image": "samples lack an image member (jpg/jpeg/png/webp): check data.layout",
    "missing_caption": "samples lack a caption (txt, or json with caption): check data.layout",
}


def explain_skips(
    skipped: dict[str, int], dropped: dict[str, int], *, min_box_size: int = 0
) -> str:
    """What to change, for the most frequent skip reason (one sentence)."""
    if not skipped:
        return ""
    reason = max(skipped, key=skipped.get)
    small = dropped.get("box_too_small", 0)
    if reason == "no_usable_box" and small and small >= max(dropped.values()):
        return (
            f"every box was smaller than data.min_box_size={min_box_size} pixels "
            f"({dropped['box_too_small']} box(es) dropped by that rule): lower data.min_box_size"
        )
    hint = SKIP_HINTS.get(reason, "check the shards with `hyvl data stats`")
    if reason == "no_usable_box" and dropped:
        hint = f"boxes dropped: {dict(dropped)}; {hint}"
    return hint


class CountingLoader:
    """Iterates a loader of Batches, totals what was skipped across workers, bounds the waste.

    ``position``: loader items consumed so far (usable or empty), where a resumed training
    stream restarts. Empty batches are counted and not passed on. ``max_unusable``: samples
    in a row without a usable one before :class:`DataError` (0 = no bound, for finite eval
    streams). Skips are logged at most once per reason every ``log_seconds``, with counts.
    """

    def __init__(self, loader, log_seconds: float = 100.0, max_unusable: int = 0, explain=None):
        self.loader = loader
        self.log_seconds = log_seconds
        self.max_unusable = max_unusable
        self.explain = explain or (lambda skipped, dropped: explain_skips(skipped, dropped))
        self.position = 0
        self._skipped: Counter = Counter()
        self._dropped: Counter = Counter()
        self._since_log: Counter = Counter()
        self._logged_at: dict[str, float] = {}

    def count_from(self, skipped: dict[str, int]) -> None:
        """Continue the totals of a resumed run (the checkpoint's ``skipped``)."""
        self._skipped = Counter(skipped)

    def __iter__(self) -> Iterator[Batch]:
        unusable = 0
        # torch's DataLoader draws its workers' base seed from the global generator as its
        # iterator starts; after a resume that draw would shift the stream dropout and drop
        # path read, and the resumed run would part from the unbroken one
        with torch.random.fork_rng(devices=[]):
            batches = iter(self.loader)
        for batch in batches:
            self.position += 1
            self._skipped.update(batch.skipped)
            self._dropped.update(batch.dropped_boxes)
            self._log(batch)
            if batch.error:
                raise DataError(batch.error)
            if len(batch) == 0:
                unusable += sum(batch.skipped.values())
                if self.max_unusable and unusable >= self.max_unusable:
                    skipped, dropped = self.skipped(), self.dropped_boxes()
                    raise DataError(
                        f"{unusable} samples in a row were unusable, no batch could be made "
                        f"(skipped: {skipped}); {self.explain(skipped, dropped)}"
                    )
                continue
            unusable = 0
            yield batch

    def _log(self, batch: Batch) -> None:
        """One line per reason per interval: 'N more (total T), e.g. <first example>'."""
        now = time.monotonic()
        for reason, n in batch.skipped.items():
            self._since_log[reason] += n
            if now - self._logged_at.get(reason, -math.inf) < self.log_seconds:
                continue
            example = batch.notes.get(reason, "")
            log.warning(
                "skipped %d sample(s) (%s, %d in total)%s",
                self._since_log[reason],
                reason,
                self._skipped[reason],
                f"; e.g. {example}" if example else "",
            )
            self._logged_at[reason] = now
            self._since_log[reason] = 0

    def skipped(self) -> dict[str, int]:
        """Samples skipped so far, by reason (merged over workers)."""
        return dict(self._skipped)

    def dropped_boxes(self) -> dict[str, int]:
        """Boxes dropped so far (the sample was kept), by reason."""
        return dict(self._dropped)


def _ignore_stop_signals(worker_id: int) -> None:
    """Loader workers leave SIGINT / SIGTERM / SIGUSR1 to the training process.

    Ctrl-C reaches every process of the terminal's group and SLURM signals every process of
    the job: a worker ended by one would end the run before it could write its checkpoint
    (the main process stops them itself when it is done).
    """
    import signal

    for name in ("SIGINT", "SIGTERM", "SIGUSR1"):
        signal.signal(getattr(signal, name), signal.SIG_IGN)


def _loader(dataset, workers: int):
    return torch.utils.data.DataLoader(
        dataset,
        batch_size=None,  # batches are made in the workers
        num_workers=workers,
        persistent_workers=False,
        prefetch_factor=2 if workers > 0 else None,
        worker_init_fn=_ignore_stop_signals if workers > 0 else None,
    )


def build_train_loader(
    data_cfg: DataConfig,
    *,
    batch_size: int,
    image_size: int,
    tokenizer: Any,
    seed: int = 0,
    rank: int = 0,
    world_size: int = 1,
    start_step: int = 0,
    boxes_per_sample: int | None = None,
) -> CountingLoader:
    """Infinite iterable of training :class:`Batch` es for this rank (``batch_size`` per process).

    ``start_step=N`` (a loader ``position``: items consumed, usable or not) yields exactly
    the batches an uninterrupted loader yields after its first N items.
    Finite (non-resampled) mode splits shards by rank and worker so an epoch reads each sample
    once; it needs at least ``world_size * workers`` shards.
    """
    urls = expand_shards(data_cfg.train_shards)
    workers = data_cfg.workers
    if not data_cfg.resampled and len(urls) < world_size * max(1, workers):
        raise DataError(
            f"{len(urls)} shard(s) in {data_cfg.train_shards!r} for {world_size} process(es) x "
            f"{max(1, workers)} worker(s): every worker needs a shard. Use data.resampled=true, "
            "fewer data.workers, or more shards."
        )
    k = data_cfg.boxes_per_sample if boxes_per_sample is None else boxes_per_sample
    decoder = Decoder(
        image_size=image_size,
        tokenizer=tokenizer,
        train=True,
        boxes_per_sample=k,
        layout=data_cfg.layout,
        min_box_size=data_cfg.min_box_size,
        rrc_scale=tuple(data_cfg.rrc_scale),
        draft=math.ceil(data_cfg.decode_draft * image_size),
    )
    stream = TrainStream(
        urls,
        decoder,
        batch_size=batch_size,
        seed=seed,
        rank=rank,
        world_size=world_size,
        workers=workers,
        resampled=data_cfg.resampled,
        shuffle_buffer=data_cfg.shuffle_buffer,
        start_step=start_step,
    )
    loader = CountingLoader(
        _loader(stream, workers),
        log_seconds=data_cfg.skip_log_every,
        # generous: real data never has this many unusable samples in a row
        max_unusable=max(1000, 10 * batch_size),
        explain=lambda skipped, dropped: explain_skips(
            skipped, dropped, min_box_size=data_cfg.min_box_size
        ),
    )
    loader.position = start_step
    return loader


# ------------------------------------------------------------------------------------------
# Evaluation stream
# ------------------------------------------------------------------------------------------


class EvalStream(torch.utils.data.IterableDataset):
    """Every sample once, in shard order (shards split over workers, then re-read in order).

    Batches are cut from the raw samples before decoding, so their composition does not
    depend on which samples turn out unusable. With ``world > 1`` this process decodes only
    the batches ``i`` with ``i % world == rank`` (``Batch.index`` = i) and skips the others'
    unread: several processes share an evaluation without decoding anything twice.
    """

    def __init__(self, urls, decoder, batch_size, rank: int = 0, world: int = 1):
        super().__init__()
        self.urls, self.decoder, self.batch_size = urls, decoder, batch_size
        self.rank, self.world = rank, world

    def __iter__(self) -> Iterator[Batch]:
        info = torch.utils.data.get_worker_info()
        urls = self.urls if info is None else self.urls[info.id :: info.num_workers]
        counts: Counter = Counter()
        samples = raw_samples(urls, counts)
        for index in itertools.count():
            raws = [r for _, r in zip(range(self.batch_size), samples, strict=False)]
            if not raws:
                break
            if index % self.world != self.rank:
                continue
            batch = self.decoder(raws, _seeded("eval"))
            if len(batch) == 0:  # its skips are reported with the next batch
                counts.update(batch.skipped)
                continue
            batch.skipped = dict(Counter(batch.skipped) + counts)
            batch.index = index
            counts.clear()
            yield batch


def build_eval_loader(
    shards: str | list[str],
    *,
    batch_size: int = 64,
    image_size: int,
    tokenizer: Any,
    boxes_per_sample: int = 0,
    workers: int = 0,
    layout: str = "auto",
    min_box_size: int = 0,
    rank: int = 0,
    world: int = 1,
) -> CountingLoader:
    """Finite loader over every sample of ``shards`` (eval transforms, first k boxes).

    ``rank`` / ``world``: only this process's batches of a shared evaluation (see EvalStream).
    """
    if world > 1 and workers > 0:
        # workers split the shards among themselves, so batch indices would differ per worker
        raise ValueError("build_eval_loader: a shared evaluation (world > 1) needs workers=0")
    urls = expand_shards(shards)
    decoder = Decoder(
        image_size=image_size,
        tokenizer=tokenizer,
        train=False,
        boxes_per_sample=boxes_per_sample,
        layout=layout,
        min_box_size=min_box_size,
    )
    workers = min(workers, len(urls))
    return CountingLoader(_loader(EvalStream(urls, decoder, batch_size, rank, world), workers))
