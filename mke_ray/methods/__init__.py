"""The MKE methods: which inputs and which labels each model is trained on."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from mke_ray.registry import Registry


@dataclass(frozen=True)
class Method:
    name: str
    label: str  # as the paper's tables print it
    multimodal: bool  # all modalities, or the teacher's only
    targets: Literal["pseudo", "true"]  # the teacher's pseudo labels, or ground truth
    augment: bool = False  # trains on the task's input augmentation (a NOISY student)

    def modalities(self, task) -> tuple[str, ...]:
        return tuple(task.modalities) if self.multimodal else (task.teacher_modality,)


METHODS: Registry[Method] = Registry("method")
for _m in (
    Method("um_student", "UM student", multimodal=False, targets="pseudo"),
    Method("noisy_student", "NOISY student", multimodal=False, targets="pseudo", augment=True),
    Method("mm_student", "MM student", multimodal=True, targets="pseudo"),
    Method("mm_sup", "MM student (sup)", multimodal=True, targets="true"),
):
    METHODS.register(_m.name)(_m)

TEACHER_LABEL = "UM teacher"
