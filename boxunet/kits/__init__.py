"""KiTS-specific variants (documentation/kits_variants.md).

* ``label_assignment``: the label-assignment ensemble of kidney+tumor / kidney / tumor networks (seed 001);
* ``heatmaps``: per-slice landmark and boundary heatmaps, the regression targets of seed 001;
* ``localization``: the region of interest of a localization network (segmentation box or landmark box);
* ``kidney_count``: counting kidneys by volume and the abnormal-case rule (seed 004);
* ``components``: per-slice small-component removal (seed 001) and lesions connected to a region (seed 004).
"""
