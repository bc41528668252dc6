"""Numbers the papers quote for models that are not trained here, entered once as data.

A table shows such a row beside the trained ones and names its source in a footnote; it never
becomes an MLflow run. Each row says which paper's table prints it, the model as that table names
it, where the numbers were first published, and the numbers keyed by what the table's columns vary
(a width multiplier, a test resolution). Add a row here for any other quoted result (e.g. RS-Nets
Fig. 1's S-/US-MobileNetV2 points) and select it with ``rows``.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Published:
    paper: str  # the paper whose table prints the numbers
    table: str  # e.g. "Table 4"
    row: str  # the model, as the table names it
    cite: str  # the table's reference mark for the source, e.g. "[31]"
    source: str  # where the numbers were first published
    backbone: str  # resolab's name of the backbone the row compares with
    axis: str  # what the keys of ``numbers`` are: "width_mult" or "test_resolution"
    metric: str  # e.g. "top1" (%)
    numbers: tuple[tuple[float, float], ...]  # (axis value, metric); a value the table leaves blank is absent
    model_size: str = ""  # as the table's "Model Size" row prints it
    # Decimals the source prints; a quoted number keeps them whatever the table's own precision (SAN
    # Table 7 prints its SAN row with two decimals and FixRes' with one: "78.1", never "78.10").
    decimals: int = 1

    @property
    def label(self) -> str:
        return f"{self.row} {self.cite}"

    def at(self, key: float) -> float | None:
        return dict(self.numbers).get(key)

    def text(self, key: float) -> str | None:
        """The number at ``key`` as the source prints it, or None where it has none."""
        value = self.at(key)
        return None if value is None else f"{value:.{self.decimals}f}"

    def keys(self) -> list[float]:
        return [key for key, _ in self.numbers]

    def footnote(self) -> str:
        metric = METRIC_TEXT.get(self.metric, self.metric)
        return f"{self.label}: {metric} as published in {self.source}, quoted by {self.paper} {self.table}; not trained here"


METRIC_TEXT = {"top1": "top-1 %", "top5": "top-5 %"}


SLIMMABLE = "Yu, Yang, Xu, Yang, Huang, Slimmable Neural Networks (ICLR 2019)"
UNIVERSALLY_SLIMMABLE = "Yu, Huang, Universally Slimmable Networks and Improved Training Techniques (ICCV 2019)"
FIXRES = "Touvron, Vedaldi, Douze, Jégou, Fixing the Train-Test Resolution Discrepancy (NeurIPS 2019)"

PUBLISHED: tuple[Published, ...] = (
    # RS-Nets Table 4: width-switchable MobileNetV2s at 224x224, top-1 % on ImageNet; S has no 0.8x, 0.65x.
    Published("RS-Nets", "Table 4", "S-MobileNetV2", "[31]", SLIMMABLE, "mobilenet_v2", "width_mult", "top1",
              ((1.0, 70.5), (0.5, 64.4), (0.35, 59.7)), model_size="1×"),
    Published("RS-Nets", "Table 4", "US-MobileNetV2", "[30]", UNIVERSALLY_SLIMMABLE, "mobilenet_v2", "width_mult",
              "top1", ((1.0, 71.5), (0.8, 70.0), (0.65, 68.3), (0.5, 65.0), (0.35, 62.2)), model_size="1×"),
    # SAN Table 7: ResNet-50 trained at 224x224, top-1 % on ImageNet at each test resolution.
    Published("SAN", "Table 7", "FixRes (train 224)", "[30]", FIXRES, "resnet50", "test_resolution", "top1",
              ((64, 41.7), (128, 67.7), (224, 77.1), (288, 78.6), (384, 79.0), (448, 78.4), (480, 78.1))),
)


def rows(paper: str, table: str, backbone: str | None = None) -> list[Published]:
    """The published rows of one paper's table, optionally only those that compare with ``backbone``."""
    return [p for p in PUBLISHED if p.paper == paper and p.table == table and backbone in (None, p.backbone)]
