"""The neuron/hardware vocabulary is one (spikereg_neuro/hardware.py)."""
import pytest


def test_one_neuron_vocabulary():
    # the model's, the profiler's, the mapper's and the fixed-point rules' names and widths are
    # the ones of spikereg_neuro/hardware.py
    from calibration import loihi_rules as R
    from loihi import limits as LIM
    from spikereg_neuro import hardware as H
    from spikereg_neuro.model.neuron import NEURON_KINDS
    from spikereg_neuro.profiler import counting

    assert NEURON_KINDS == ("alif", "cuba")
    assert H.neuron_kind("alif") is H.neuron_kind("atrlif") and LIM.state_bytes_per_neuron("alif") == 12
    assert R.WEIGHT_BITS == LIM.WEIGHT_BITS == counting.WEIGHT_BITS == H.WEIGHT_BITS == 8
    assert R.STATE_BITS == LIM.STATE_BITS == counting.STATE_BITS == H.STATE_BITS == 24
    assert LIM.STATE_VARS == counting.STATE_VARS == H.state_var_counts()
    from calibration.netfile import NEURON_KINDS as NET_H5_KINDS
    from loihi.export import NEURONS as DEPLOY_H5_KINDS
    assert NET_H5_KINDS == DEPLOY_H5_KINDS == H.DEPLOYABLE == ("atrlif", "integrator")
    with pytest.raises(ValueError, match="unknown neuron kind"):
        H.neuron_kind("izhikevich")
