//! Kubernetes API server with a fake Job controller and kubelet.
