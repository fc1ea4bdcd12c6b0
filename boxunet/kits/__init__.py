"""KiTS-specific variants (documentation/kits_variants.md).

* ``label_assignment``: the label-assignment ensemble of kidney+tumor / kidney / tumor networks ([Zhang 2019]);
* ``heatmaps``: per-slice landmark and boundary heatmaps, the regression targets of [Zhang 2019];
* ``localization``: the region of interest of a localization network (segmentation box or landmark box);
* ``kidney_count``: counting kidneys by volume and the abnormal-case rule ([KiTS19 coarse-to-fine]);
* ``components``: per-slice small-component removal ([Zhang 2019]) and lesions connected to a region ([KiTS19 coarse-to-fine]).
"""
