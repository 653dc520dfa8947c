"""Owens et al., "Ambient sound provides supervision for visual learning" (ECCV 2016), as a baseline of the MKE
paper's Table 5 (0.371 mAP on VGGSound).

The paper trains a visual network on unlabeled videos to predict, from a frame, a statistical summary of the
sound that goes with it: the paired modality, computed by a fixed function, is the only supervision. Adapted to
MKE (the paper's Table 5 compares it on the same unlabeled clips and the same teacher):

- the network of the new modality (video for events; audio for RAVDESS, depth for NYU, b for TwoMoon, the
  non-teacher groups of a tabular file) alone, the task's unimodal network for it, with the trial's regularizers;
- its targets: the summary of the paired teacher modality is the teacher's output on it, its class probabilities
  (per-class sigmoids for multi-label events, per pixel for NYU), computed on every training batch after the
  task's augmentation (an events student hears nothing; the teacher hears the batch's random crop);
- its loss: cross-entropy against those probabilities (binary cross-entropy per class for events);
- evaluated alone, on the new modality: the paper's network sees frames only.

Confirmed from the paper's public abstract and project page: a CNN predicts a statistical summary of the sound of
a video frame, trained on unlabeled video, and its representation is then evaluated on recognition tasks.
Assumed (not read in the paper itself): that the summary may be the teacher's class probabilities (the paper
summarises sound with hand-designed texture statistics and, as we recall it, predicts cluster memberships of
them); the soft targets follow the issue that asked for this baseline; that no labeled fine-tuning follows (MKE
has no labels for the new modality).
"""

from __future__ import annotations

from mke_ray.methods.base import Student, register
from mke_ray.methods.crossmodal import CrossModal, new_network, teacher_targets


@register
class Owens(CrossModal):
    """The new modality's network learns to predict the teacher's soft outputs on the paired data."""

    name, label, learns_from = "owens", "Owens et al.", "soft_labels"

    def network(self, task, regularization):
        return new_network(task, regularization)

    def prepare(self, task, trial, teacher) -> Student:
        teacher_net, x, model = self.prepare_parts(task, trial, teacher)
        ignore = task.ignore_index

        def soft_outputs(net, x, y):
            probabilities = task.soft_labels(net(x))
            if ignore is not None and y.ndim == probabilities.ndim - 1:  # pixels the augmentation padded
                probabilities = probabilities * (y != ignore).unsqueeze(1)
            return probabilities

        augment = teacher_targets(self.augmentation(task, trial.regularization), teacher_net, soft_outputs)
        return Student(self, trial, self.modalities(task), model, x, teacher.labels, task.soft_loss(), augment,
                       extra={"teacher": teacher_net})
