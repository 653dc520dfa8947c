"""CMKD: the cross-modal knowledge distillation of Zhao et al., "Knowledge as priors: cross-modal knowledge
generalization for datasets without superior knowledge" (CVPR 2020), as a baseline of the MKE paper's Tables 4
and 5 (45.25 mIoU on NYU Depth V2, 0.372 mAP on VGGSound).

That paper distils, on a source dataset of paired examples, a teacher trained on one modality into a student of
another by aligning their intermediate feature representations while the student learns its task (it calls this
scheme, after Gupta et al., cross-modal knowledge distillation, CMKD); its contribution carries the distilled
knowledge to a target dataset where the teacher's modality is missing, as priors on the student's parameters
learned by meta-learning. Adapted to MKE (the paper's tables compare it on the same unlabeled multimodal data and
the same teacher):

- the student: the network of the new modality (the task's unimodal network for it), with the trial's
  regularizers, evaluated alone, as the paper's student is at test time;
- one stage, one loss: the task's loss against the teacher's pseudo labels (MKE has no labels on the paired
  data) plus ``feature_weight`` times the mean squared error between the student's features and the frozen
  teacher's at the same place (the representation each network's head reads; a learned linear map, a 1x1
  convolution on feature maps, where the channels differ), both computed on every training batch after the
  task's augmentation;
- no learned prior: every sample the student trains on holds the teacher's modality, so there is no dataset
  without the teacher for priors to carry the knowledge to; the distillation on paired data that the priors are
  learned from is what remains.

Confirmed from the paper's abstract and introduction: the teacher-student scheme on paired data aligns
intermediate feature representations; the generalisation to a dataset without the superior modality models the
knowledge as priors on the student's parameters, learned by meta-learning. Assumed (the method section was not
available to us): the alignment loss (squared error, as Gupta et al.'s), the layer matched, training it jointly
with the task loss in one stage, and its weight (``feature_weight`` = 1).
"""

from __future__ import annotations

import torch.nn.functional as F

from mke_ray.methods.base import Student, register
from mke_ray.methods.crossmodal import CrossModal, evaluated, new_network, parallel_like, plain, teacher_targets
from mke_ray.models.crossmodal import WithFeatures, matching


@register
class Cmkd(CrossModal):
    """The new modality's network trained on the pseudo labels while its features are aligned with the
    teacher's on the paired data."""

    name, label, learns_from = "cmkd", "CMKD", "features"
    feature_weight = 1.0  # of the feature-alignment term, beside the task's loss

    def network(self, task, regularization):
        return new_network(task, regularization)

    def prepare(self, task, trial, teacher) -> Student:
        teacher_net, x, model = self.prepare_parts(task, trial, teacher)
        transform = matching(model.net, teacher_net.net)  # drawn right after the network: the trial's stream
        task_loss, weight = task.loss_fn(), self.feature_weight

        def loss_fn(outputs, targets):
            (logits, features), (labels, teacher_features) = outputs, targets
            return task_loss(logits, labels) + weight * F.mse_loss(features.float(), teacher_features)

        augment = teacher_targets(self.augmentation(task, trial.regularization), teacher_net,
                                  lambda net, x, y: (y, net.embed(x).float()))
        return Student(self, trial, self.modalities(task), model, x, teacher.labels, loss_fn, augment,
                       extra={"teacher": teacher_net, "transform": transform})

    def train(self, student: Student, fit, **options):
        network = plain(student.model)
        joint = parallel_like(student.model, WithFeatures(network, student.extra["transform"]))
        return fit(joint, student.x, student.y, loss_fn=student.loss_fn, augment=student.augment,
                   **evaluated(options, network))
