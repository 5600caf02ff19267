

def test_network_skeleton_has_the_module_names_without_memory():
    from hemwsl.networks.registry import network_skeleton

    net = network_skeleton("resnet10", 6, 1)
    assert all(p.is_meta for p in net.parameters())
    net.get_submodule("layer4")
    lse = network_skeleton("lse_resnet10", 6, 1, {"lse_r": 5.0})  # probes its encoder: built on the CPU
    assert not any(p.is_meta for p in lse.parameters())
    lse.get_submodule("levels.0.conv")
