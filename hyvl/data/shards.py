"""Reading webdataset shards: shard specs -> urls -> raw samples, never stopping on a bad shard.

A truncated or unreadable shard is counted (``truncated_tar`` / ``unreadable_shard``) and the
complete samples before the damage still come out; a stream whose every shard fails raises
:class:`DataError` instead of cycling forever. Decoding the samples is :mod:`hyvl.data.pipeline`'s.
"""

from __future__ import annotations

import glob
import logging
import os
from collections import Counter
from collections.abc import Iterator

from hyvl.errors import DataError

log = logging.getLogger(__name__)

REMOTE = ("pipe:", "http://", "https://", "gs://", "s3://")
TAR_SUFFIXES = (".tar", ".tar.gz", ".tgz")


def expand_shards(spec: str | list[str]) -> list[str]:
    """Brace expansion (``{000..009}``), ``::``-separated lists and globs; URLs pass through."""
    import webdataset as wds

    specs = [spec] if isinstance(spec, str) else list(spec)
    urls: list[str] = []
    for item in specs:
        for url in wds.shardlists.expand_urls(item):
            if url.startswith(REMOTE):
                urls.append(url)
            elif any(ch in url for ch in "*?["):
                matches = sorted(glob.glob(url))
                if not matches:
                    raise DataError(f"no shards match {url!r}")
                urls.extend(matches)
            else:
                urls.append(url)
    if not urls:
        raise DataError(f"empty shard spec {spec!r}")
    return urls


def check_source(spec: str | os.PathLike, flag: str = "") -> None:
    """Before any model is loaded: a local data path exists. A plain path that is missing is
    ``no such directory: PATH`` (``no such file`` for a ``.tar`` or a file with a suffix), a
    glob that matches nothing or a brace list with a missing shard names it; URLs and
    ``pipe:`` pass. ``flag`` (``--images``) starts the message."""
    text = str(spec)
    lead = f"{flag}: " if flag else ""
    if not text or text.startswith(REMOTE) or text.startswith("torchvision:"):
        return
    if any(ch in text for ch in "*?[{") or "::" in text:
        try:
            urls = expand_shards(text)
        except DataError as err:
            raise DataError(f"{lead}{err}") from None
        for url in urls:
            if not url.startswith(REMOTE) and not os.path.exists(url):
                raise DataError(f"{lead}no such file: {url}")
        return
    if not os.path.exists(text):
        name = os.path.basename(text.rstrip("/"))
        kind = "file" if text.endswith(TAR_SUFFIXES) or "." in name[1:] else "directory"
        raise DataError(f"{lead}no such {kind}: {text}")


def one_line(text: str, limit: int = 300) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


class _ShardErrors:
    """webdataset handler: count a truncated or unreadable shard, keep going (no sleep).

    With ``notes`` (a training stream, in a loader worker) the first message of each reason
    is kept for the main process's rate-limited log instead of being logged here.
    """

    def __init__(self, counts: Counter, notes: dict | None = None):
        self.counts = counts
        self.notes = notes
        self.url = ""
        self.reported = False  # webdataset re-raises one error at two levels: count it once

    def start(self, url: str) -> None:
        self.url, self.reported = url, False

    def __call__(self, exn: Exception) -> bool:
        if not self.reported:
            text = str(exn)
            truncated = "end of data" in text or "EOF" in text or "truncated" in text
            reason = "truncated_tar" if truncated else "unreadable_shard"
            self.counts[reason] += 1
            if self.notes is None:
                log.warning("%s: %s (%s); samples before it were kept", self.url, reason, exn)
            else:
                self.notes.setdefault(reason, one_line(f"{self.url}: {exn}"))
            self.reported = True
        return True


def raw_samples(urls, counts: Counter, notes: dict | None = None) -> Iterator[dict]:
    """Raw samples of the shards in order; complete samples before a truncation still come out."""
    from webdataset import tariterators as t

    handler = _ShardErrors(counts, notes)
    for url in urls:
        handler.start(url)
        stream = t.url_opener([{"url": url}], handler=handler)
        files = t.tar_file_expander(stream, handler=handler)
        for sample in t.group_by_keys(files, handler=handler):
            if sample:
                yield sample


def readable_samples(urls, pool: int, counts: Counter, notes: dict) -> Iterator[dict]:
    """Raw samples of ``urls``; raises DataError once every one of the ``pool`` distinct shards
    was opened since the last sample without giving one (nonexistent paths, files that are not
    tar archives), instead of cycling through them forever."""
    failed: set[str] = set()
    opened = 0
    for url in urls:
        got = False
        for sample in raw_samples([url], counts, notes):
            got = True
            yield sample
        if got:
            failed.clear()
            opened = 0
            continue
        failed.add(url)
        opened += 1
        # resampled shards are drawn at random: a cap on draws too, far above the
        # coupon-collector time of the pool
        if len(failed) >= pool or opened >= 20 * pool + 100:
            example = next(iter(notes.values()), "the shards are empty")
            raise DataError(
                f"no sample could be read from any of the {pool} shard(s) of this stream "
                f"(e.g. {example}); skipped: {dict(counts) or 'nothing'}. Check data.train_shards"
            )
