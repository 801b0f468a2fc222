"""Lung fields for chest radiographs: a small shipped U-Net, its plausibility checks, and `cxr
lungs`."""
