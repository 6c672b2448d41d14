"""One way to say how vectors are made and compared: a `Config`, by preset name or by fields.

`--compare` takes a preset (`default`, `tutorial`, `previous`, `single`, and the variants
measured against them) or fields joined by commas
(`pooling=avg,metric=cosine`, `model=resnet50,input_size=224`); fields not given are the
model's own defaults.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace

from ..errors import InvalidParameter
from ..features.models import DEFAULT_MODEL, MID_DEFAULT, POOLINGS, check_input_size, get_spec
from ..features.mid import NONE as NO_MID
from ..features.mid import mid_text, parse_mid
from ..features.views import SINGLE, parse_views
from ..knn.metrics import get_metric
from ..sources.decode import DEFAULT_RESIZE, RESIZES


@dataclass(frozen=True)
class Config:
    """How vectors are made (model, weights, pooling, input side, resize policy, views,
    mid-level features) and compared (metric); None means the model's own default (`resolved()` fills them in)."""

    model: str = DEFAULT_MODEL
    weights: str = "imagenet"
    pooling: str | None = None
    metric: str | None = None
    input_size: int | None = None
    resize: str = DEFAULT_RESIZE
    views: str | None = None
    mid: str | None = None
    name: str = ""

    def resolved(self) -> Config:
        """This config with every default filled in, and every field checked (one line)."""
        spec = get_spec(self.model)
        pooling = spec.pooling if self.pooling is None else self.pooling
        if pooling not in POOLINGS or pooling == "none":
            raise InvalidParameter(f"pooling {pooling!r} cannot be evaluated; choose one of "
                                   f"{', '.join(p for p in POOLINGS if p != 'none')}")
        if self.resize not in RESIZES:
            raise InvalidParameter(f"unknown resize {self.resize!r}; choose one of {', '.join(RESIZES)}")
        metric = get_metric(spec.metric if self.metric is None else self.metric).name
        size = check_input_size(spec.input_size if self.input_size is None else self.input_size)
        views = parse_views(spec.views if self.views is None else self.views)
        mid = mid_text(parse_mid(spec.mid if self.mid is None else self.mid))
        return replace(self, pooling=pooling, metric=metric, input_size=size, views=views, mid=mid,
                       name=self.name or self.label(pooling, metric, size, views, mid))

    def label(self, pooling=None, metric=None, size=None, views=None, mid=None) -> str:
        weights = "" if self.weights == "imagenet" else f" weights={self.weights}"
        views = views or self.views
        mid = mid or self.mid
        shown = "" if views in (None, SINGLE) else f" views={views}"
        shown += "" if mid in (None, NO_MID) else f" mid={mid}"
        return (f"{self.model} {pooling or self.pooling} {metric or self.metric} {size or self.input_size} "
                f"{self.resize}{shown}{weights}")

    def as_dict(self) -> dict:
        return asdict(self)


PRESETS: dict[str, Config] = {
    # lookalike's defaults: the default model with its own pooling, metric, size and resize
    "default": Config(name="default"),
    # the tutorial's own setting: ResNet-50 (weights downloaded once), max pooling, euclidean
    "tutorial": Config(model="resnet50", pooling="max", metric="euclidean", resize="crop", views="full", mid="none",
                       name="tutorial"),
    # the default model as lookalike ran it before `lookalike eval` chose its defaults
    "previous": Config(pooling="max", metric="euclidean", input_size=96, resize="crop", views="full",
                       mid="none", name="previous"),
    # the default model's settings chosen by `lookalike eval` before views: one view of each image
    "single": Config(pooling="max", metric="cosine", input_size=96, resize="crop", views="full", mid="none",
                     name="single"),
    # test-time views measured against it (benchmarks/quality_views.py; docs/quality.md)
    "mirror": Config(pooling="max", metric="cosine", input_size=96, views="full+mirror", mid="none",
                     name="mirror"),
    "centre": Config(pooling="max", metric="cosine", input_size=96, views="full+centre", mid="none",
                     name="centre"),  # the default before mid-level features
    "centre_mirror": Config(pooling="max", metric="cosine", input_size=96, views="full+centre+mirror",
                            mid="none", name="centre_mirror"),
    # mid-level features (blocks 5 and 8, GeM) joined to the final vector, with both views (the
    # default since) and with the full view alone (benchmarks/quality_mid.py chose them)
    "mid": Config(pooling="max", metric="cosine", input_size=96, views="full+centre", mid=MID_DEFAULT, name="mid"),
    "mid_single": Config(pooling="max", metric="cosine", input_size=96, views="full", mid=MID_DEFAULT,
                         name="mid_single"),
}
FIELDS = tuple(f.name for f in fields(Config) if f.name != "name")


def parse_config(text: str) -> Config:
    """A preset name or `field=value,...` (fields: model, weights, pooling, metric,
    input_size, resize, views, mid), resolved; a bad one is a one-line `InvalidParameter`."""
    text = text.strip()
    if text in PRESETS:
        return PRESETS[text].resolved()
    values: dict[str, object] = {}
    for part in text.split(","):
        key, eq, value = part.partition("=")
        key = key.strip().replace("-", "_")
        if not eq or not value.strip():
            raise InvalidParameter(f"configuration {text!r}: give a preset ({', '.join(PRESETS)}) or fields "
                                   f"like pooling=avg,metric=cosine ({', '.join(FIELDS)})")
        if key not in FIELDS:
            raise InvalidParameter(f"configuration {text!r}: unknown field {key!r}; fields: {', '.join(FIELDS)}")
        if key == "input_size":
            try:
                values[key] = int(value)
            except ValueError:
                raise InvalidParameter(f"configuration {text!r}: input_size {value!r} is not a whole number") \
                    from None
        else:
            values[key] = value.strip()
    return Config(**values).resolved()  # type: ignore[arg-type]
