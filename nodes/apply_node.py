"""SurgUnApplyErasedWeights: apply saved (or freshly trained) erased weights to a MODEL."""

from __future__ import annotations

from comfy_api.latest import io

from ..surgun_comfy.apply import apply_erased, load_weights_file
from .inputs import require_socket
from .sockets import ErasedWeightsSocket

NONE = "(none: use the erased_weights input)"


def weights_files() -> list[str]:
    import folder_paths

    return [NONE, *folder_paths.get_filename_list("loras")]


class SurgUnApplyErasedWeights(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="SurgUnApplyErasedWeights",
            display_name="SurgUn Apply Erased Weights",
            category="SurgUn",
            description=(
                "Applies erased weights (a SurgUn file from models/loras, or the ERASED_WEIGHTS output of SurgUn Train) "
                "to a model, with a strength. Refuses files made for another model family or size."
            ),
            inputs=[
                io.Model.Input("model", tooltip="The model to apply the erasure to. The input is not modified."),
                io.Combo.Input("weights_file", options=weights_files(), default=NONE,
                               tooltip="A SurgUn erased-weights file from models/loras. Ignored when erased_weights is connected."),
                io.Float.Input("strength", default=1.0, min=-10.0, max=10.0, step=0.05,
                               tooltip="How much of the erasure to apply: 1 = as trained, 0.5 = half, 0 = off (the model is returned unchanged)."),
                ErasedWeightsSocket.Input("erased_weights", optional=True,
                                          tooltip="Erased weights from SurgUn Train; takes precedence over weights_file."),
            ],
            outputs=[io.Model.Output(display_name="MODEL", tooltip="The model with the erasure applied.")],
        )

    @classmethod
    def execute(cls, model: io.Model.Type, weights_file: str, strength: float,
                erased_weights: ErasedWeightsSocket.Type | None = None) -> io.NodeOutput:
        require_socket("model", model, "MODEL")
        require_socket("erased_weights", erased_weights, "ERASED_WEIGHTS", optional=True)
        if erased_weights is None:
            erased_weights = load_weights_file(None if weights_file == NONE else weights_file)
        return io.NodeOutput(apply_erased(model, erased_weights, strength))
