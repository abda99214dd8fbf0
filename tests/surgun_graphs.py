"""API-format graphs for the node tests."""

FAMILIES = ["sd1", "sd2v", "sdxl", "sd3", "flux"]


def train_inputs(**over):
    base = {
        "target": "a painting by zorblax", "distractors": "a painting by monet\na painting by hokusai\na photo of a red car",
        "retain_prompts": "a photo of a dog\na city street", "blocks": "cross_attention", "block_pattern": "",
        "steps": 4, "learning_rate": 1e-3, "ascent_weight": 1.0, "distractor_weight": 1.0, "retain_weight": 1.0,
        "ascent_cap": 2.0, "seed": 0, "sample_size": 64, "sample_steps": 2, "samples_per_prompt": 2,
        "sample_cfg": 3.0, "filename_prefix": "",
    }
    base.update(over)
    return base


def graph(family="sd1", model_seed=0, width=32, **train):
    return {
        "1": {"class_type": "SurgUnTestTinyModel", "inputs": {"family": family, "seed": model_seed, "width": width}},
        "2": {"class_type": "SurgUnTrain", "inputs": {"model": ["1", 0], "clip": ["1", 1], **train_inputs(**train)}},
    }
