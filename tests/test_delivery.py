"""Trial folders on the driver's node: straight into the output folder; through the inbox actor only where other
nodes can run trials."""

import json

import ray

from mke_ray.tuning.delivery import open_delivery


def test_a_private_local_ray_gets_no_inbox_and_folders_go_straight_to_the_output(tmp_path, ray_local):
    delivery = open_delivery(tmp_path, single_node=True)
    assert delivery.inbox is None  # no actor: no process of its own holding ~600 MiB
    with delivery.folder("trials/a") as folder:
        assert folder == tmp_path.resolve() / "trials" / "a"
        folder.mkdir(parents=True)
        (folder / "result.json").write_text(json.dumps({"test_acc": 81.5}))
    assert delivery.read_result("trials/a") == {"test_acc": 81.5}
    assert delivery.read_result("trials/missing") is None


def test_a_cluster_gets_an_inbox_that_writes_what_other_nodes_send(tmp_path, ray_local):
    delivery = open_delivery(tmp_path)
    assert delivery.inbox is not None
    sent = tmp_path / "scratch"
    (sent / "sub").mkdir(parents=True)
    (sent / "sub" / "history.csv").write_text("epoch,train_loss\n1,0.5\n")
    (sent / "result.json").write_text(json.dumps({"test_acc": 70.0}))
    delivery.send(sent, "trials/b")  # as a trial on another node does when its folder is done
    assert (tmp_path / "trials" / "b" / "sub" / "history.csv").read_text() == "epoch,train_loss\n1,0.5\n"
    assert ray.get(delivery.inbox.get.remote("trials/b/result.json")) == b'{"test_acc": 70.0}'
    ray.kill(delivery.inbox)
