"""The evaluation metrics on plain arrays (numpy only): semantic mIoU, ScanNet instance AP,
panoptic quality, prompted (interactive, referring) and open-vocabulary AP, the six tasks
gathered scene by scene, and the ScanNet submission format."""
