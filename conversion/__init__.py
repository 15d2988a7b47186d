"""Host-side conversion (x86_64): a released Piper voice → an NPU bundle (flow and HiFi-GAN compiled with
rknn-toolkit2 at fixed windows, verified in the toolkit's simulator) in models/rknn/NAME/."""
