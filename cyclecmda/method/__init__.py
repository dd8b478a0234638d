"""The CycleGAN method: the networks' objective, the losses, the image pools and the label-preserving
semantic term with its replay memory."""
