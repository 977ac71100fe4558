"""The span tagger as it answers: a linear-chain CRF over the input's pieces, for extraction
whose teacher only copies (trained by `trainers.tagger`).

Every string the teacher writes is made of runs of whole pieces of the input (`is_copied`), so
the answer is fixed by which pieces belong to which field (B-/I- labels per field, "O"
outside). An answer is the Viterbi labelling written back as the teacher's JSON (`write`), and
its confidence the probability of that whole labelling (forward algorithm). Numpy only;
weights in safetensors, features in JSON.
"""

from __future__ import annotations

import bisect
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from stillroom.errors import ModelError
from stillroom.service.generation import Piece, pieces

if TYPE_CHECKING:
    from numpy.typing import NDArray

OUTSIDE = "O"
LIST = "[]"  # the field name of a top-level list of strings
STUDENT = "crf-tagger"
TAGGER_WEIGHTS = "tagger.safetensors"
TAGGER_CONFIG = "tagger.json"
_FORBIDDEN = -1e4  # an I- label only after its own B- or I-


def features(have: Sequence[Piece]) -> list[list[str]]:
    """Sparse features of each piece: itself, its shape, its neighbours and the nearest words
    around it (a JSON key three pieces back still names the value)."""
    words = [_word(p.text) for p in have]
    shapes = [_shape(p.text) for p in have]
    word_at = [i for i, p in enumerate(have) if p.text[:1].isalnum() or p.text[:1] == "_"]
    line = np.cumsum([p.gap == "\n" for p in have]) if have else np.zeros(0, dtype=int)
    out = []
    n = len(have)
    for i, p in enumerate(have):
        f = [
            "bias",
            "w=" + words[i],
            "s=" + shapes[i],
            "g=" + repr(p.gap),
            "pre=" + words[i][:3],
            "suf=" + words[i][-3:],
            "len=" + str(min(len(p.text), 6)),
            "from_start=" + str(min(i, 4)),
            "from_end=" + str(min(n - 1 - i, 4)),
            "line=" + str(min(int(line[i]), 3)),
            "lines_after=" + str(min(int(line[-1] - line[i]), 2)),
        ]
        if i == 0 or p.gap == "\n":
            f.append("line_start")
        if i + 1 == n or have[i + 1].gap == "\n":
            f.append("line_end")
        for d in (-2, -1, 1, 2):
            j = i + d
            if 0 <= j < n:
                f += [f"{d}w={words[j]}", f"{d}s={shapes[j]}", f"{d}g={have[j].gap!r}"]
            else:
                f.append(f"{d}pad")
        if i + 1 < n:
            f.append(f"w+1={words[i]}|{words[i + 1]}")
        if i:
            f.append(f"w-1={words[i - 1]}|{words[i]}")
        # The nearest word pieces before and after this one (sorted positions: bisect).
        first_after_or_at = bisect.bisect_left(word_at, i)
        for k, j in enumerate(reversed(word_at[max(0, first_after_or_at - 2) : first_after_or_at])):
            f.append(f"pw{k}={words[j]}")
        first_after = bisect.bisect_right(word_at, i)
        for j in word_at[first_after : first_after + 1]:
            f.append(f"nw={words[j]}")
        out.append(f)
    return out


def _word(text: str) -> str:
    return re.sub(r"\d", "0", text.lower())


def _shape(text: str) -> str:
    out: list[str] = []
    for ch in text[:8]:
        c = "X" if ch.isupper() else "x" if ch.islower() else "d" if ch.isdigit() else ch
        if not out or out[-1] != c:
            out.append(c)
    return "".join(out)


@dataclass
class Tagger:
    """Labels, feature vocabulary and CRF weights: emissions (features x labels), transitions
    (labels x labels), start and end scores."""

    fields: dict[str, bool]
    labels: list[str]
    vocabulary: dict[str, int]
    emissions: NDArray[np.float64]
    transitions: NDArray[np.float64]
    start: NDArray[np.float64]
    end: NDArray[np.float64]
    iterations: int = 0  # L-BFGS iterations it was trained for (not saved)

    def _emission(self, have: Sequence[Piece]) -> NDArray[np.float64]:
        rows = np.zeros((len(have), len(self.labels)))
        for i, f in enumerate(features(have)):
            ids = [self.vocabulary[x] for x in f if x in self.vocabulary]
            if ids:
                rows[i] = self.emissions[ids].sum(axis=0)
        return rows

    def tag(self, text: str) -> tuple[list[str], float]:
        """The most likely labelling of the text's pieces and its probability."""
        have = pieces(text)
        if not have:
            return [], 1.0
        e = self._emission(have)
        t = self.transitions + transition_mask(self.labels)
        start = self.start + start_mask(self.labels)
        score = start + e[0]
        back = []
        for row in e[1:]:
            total = score[:, None] + t
            back.append(total.argmax(axis=0))
            score = total.max(axis=0) + row
        score = score + self.end
        best = [int(score.argmax())]
        for pointers in reversed(back):
            best.append(int(pointers[best[-1]]))
        best.reverse()
        log_z = _log_partition(e, t, start, self.end)
        probability = float(np.exp(min(0.0, float(score.max()) - log_z)))
        return [self.labels[k] for k in best], probability

    def answer(self, text: str) -> tuple[str, float]:
        labels, probability = self.tag(text)
        return write(text, labels, self.fields), probability

    def save(self, folder: Path) -> None:
        from safetensors.numpy import save_file

        save_file(
            {
                "emissions": np.ascontiguousarray(self.emissions, dtype=np.float32),
                "transitions": np.ascontiguousarray(self.transitions, dtype=np.float32),
                "start": np.ascontiguousarray(self.start, dtype=np.float32),
                "end": np.ascontiguousarray(self.end, dtype=np.float32),
            },
            str(folder / TAGGER_WEIGHTS),
        )
        names = sorted(self.vocabulary, key=self.vocabulary.__getitem__)
        config = {"fields": self.fields, "labels": self.labels, "features": names}
        (folder / TAGGER_CONFIG).write_text(json.dumps(config, ensure_ascii=False) + "\n")

    @classmethod
    def load(cls, folder: Path) -> Tagger:
        from safetensors.numpy import load_file

        try:
            config = json.loads((folder / TAGGER_CONFIG).read_text())
            w = load_file(str(folder / TAGGER_WEIGHTS))
            tagger = cls(
                fields=config["fields"],
                labels=config["labels"],
                vocabulary={name: i for i, name in enumerate(config["features"])},
                emissions=w["emissions"].astype(np.float64),
                transitions=w["transitions"].astype(np.float64),
                start=w["start"].astype(np.float64),
                end=w["end"].astype(np.float64),
            )
        except (OSError, ValueError, KeyError) as exc:
            raise ModelError(f"{folder}: cannot read its tagger ({exc})") from exc
        if tagger.emissions.shape != (len(tagger.vocabulary), len(tagger.labels)):
            raise ModelError(f"{folder}: its tagger's weights do not fit its features")
        return tagger


def transition_mask(labels: Sequence[str]) -> NDArray[np.float64]:
    """Forbidden transitions: into I-x from anything but B-x or I-x."""
    m = np.zeros((len(labels), len(labels)))
    for j, to in enumerate(labels):
        if to.startswith("I-"):
            for i, frm in enumerate(labels):
                if frm[2:] != to[2:] or frm == OUTSIDE:
                    m[i, j] = _FORBIDDEN
    return m


def start_mask(labels: Sequence[str]) -> NDArray[np.float64]:
    """Forbidden first labels: any I-."""
    return np.array([_FORBIDDEN if x.startswith("I-") else 0.0 for x in labels])


def _log_partition(
    e: NDArray[np.float64],
    t: NDArray[np.float64],
    start: NDArray[np.float64],
    end: NDArray[np.float64],
) -> float:
    alpha = start + e[0]
    for row in e[1:]:
        alpha = _logsumexp(alpha[:, None] + t) + row
    return float(_logsumexp((alpha + end)[:, None])[0])


def _logsumexp(x: NDArray[np.float64]) -> NDArray[np.float64]:
    """log(sum(exp(x))) down the first axis, without scipy at answer time."""
    top = x.max(axis=0)
    out: NDArray[np.float64] = np.log(np.exp(x - top).sum(axis=0)) + top
    return out


def write(text: str, labels: Sequence[str], fields: dict[str, bool]) -> str:
    """The JSON a labelling of `text`'s pieces stands for: each run is the input's own text
    (whitespace collapsed); a string field joins its runs with a space."""
    have = pieces(text)
    runs: dict[str, list[str]] = {}
    current, start, end = "", 0, 0
    for piece, label in [*zip(have, labels, strict=True), (None, OUTSIDE)]:
        continues = piece is not None and label == "I-" + current
        if current and not continues:
            runs.setdefault(current, []).append(" ".join(text[start:end].split()))
            current = ""
        if piece is not None and label.startswith(("B-", "I-")) and not continues:
            current, start = label[2:], piece.start
        if piece is not None and current:
            end = piece.end
    data: dict[str, Any] = {}
    for name, is_list in fields.items():
        if name in runs:
            data[name] = runs[name] if is_list else " ".join(runs[name])
        elif is_list:
            data[name] = []
    if list(fields) == [LIST]:
        return json.dumps(data[LIST], ensure_ascii=False)
    return json.dumps(data, ensure_ascii=False)
