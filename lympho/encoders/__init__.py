"""Instance encoders: one image in, one feature vector out.

``torchvision`` holds the ImageNet backbones (resnet18/34/50, vgg16), their weights,
and the device and precision resolution they run with.
"""
