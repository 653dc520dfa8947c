"""The paper's own methods: students of the teacher's modality or of all, on its pseudo labels or (an upper
bound) on the true labels."""

from mke_ray.methods.base import Method, register


@register
class UmStudent(Method):
    """A student of the teacher's modality only, on its pseudo labels."""

    name, label, multimodal = "um_student", "UM student", False


@register
class NoisyStudent(Method):
    """A UM student trained on the task's input augmentation (Xie et al.'s NOISY student, one iteration)."""

    name, label, multimodal, augment = "noisy_student", "NOISY student", False, True


@register
class MmStudent(Method):
    """MKE's multimodal student: every modality, the teacher's pseudo labels."""

    name, label = "mm_student", "MM student"


@register
class MmSup(Method):
    """A multimodal student on the true labels of the unlabeled split: the upper bound of the MM student."""

    name, label, learns_from = "mm_sup", "MM student (sup)", "true_labels"
