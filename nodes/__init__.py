"""ComfyUI nodes of the SurgUn pack (thin V3 nodes over surgun_core and the bridge)."""

from comfy_api.latest import ComfyExtension, io


class SurgUnExtension(ComfyExtension):
    async def get_node_list(self) -> list[type[io.ComfyNode]]:
        from .apply_node import SurgUnApplyErasedWeights
        from .compare_node import SurgUnEraseRetainCompare
        from .distractor_node import SurgUnDistractorBuilder
        from .localize_node import SurgUnBlockLocalizer
        from .recovery_node import SurgUnRecoveryCheck
        from .train_node import SurgUnTrain

        return [SurgUnDistractorBuilder, SurgUnBlockLocalizer, SurgUnTrain, SurgUnApplyErasedWeights, SurgUnEraseRetainCompare,
                SurgUnRecoveryCheck]
