"""samna conformance stand-in (test code only; see ``samna_impl`` for every name's public source and
the behaviour it enforces). Only these names exist; any other ``samna.<name>`` is an AttributeError.
"""

from samna_impl import (  # noqa: F401 - re-exported as samna's API
    BasicSinkNode_dynapcnn_event_output_event,
    BasicSinkNode_speck2e_event_output_event,
    BasicSinkNode_speck2f_event_output_event,
    BasicSinkNode_unifirm_modules_events_measurement,
    BasicSourceNode_dynapcnn_event_input_event,
    BasicSourceNode_speck2e_event_speck2e_input_event,
    BasicSourceNode_speck2f_event_input_event,
    device,
    dynapcnn,
    graph,
    speck2e,
    speck2f,
)
