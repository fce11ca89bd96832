"""Models: CIFAR-style ResNet classifiers (`gitlib.models.resnet`) and the MUNIT generator (`gitlib.models.munit`)."""
