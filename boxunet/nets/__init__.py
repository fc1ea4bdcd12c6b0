"""Networks built from the plans: the plain U-Net (``boxunet.nets.unet``)."""
