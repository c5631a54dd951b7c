// Package monitor decides which filesystem is nodefs, imagefs, containerfs and which hold
// the log directories, samples their bytes and inodes with statfs, evaluates every eviction
// signal against its effective threshold with hysteresis, and predicts the time to each
// threshold (see Predictor for the method).
//
// It reads, under a host root: statfs and st_dev of the kubelet root dir, the runtime's image
// store and the log directories; this process's /proc/self/mountinfo (for mountpoints and
// devices, since statfs runs on paths as this process sees them); the runtime's
// configuration (/etc/docker/daemon.json, /etc/containerd/config.toml,
// /etc/containers/storage.conf); the /var/log/containers links; /proc/meminfo,
// /proc/loadavg and /proc/sys/kernel/{pid_max,threads-max}. When their sockets answer it asks
// dockerd (GET /info) and the CRI runtime (ImageFsInfo). It writes nothing on the host.
//
// Statfs uses the kubelet's (cadvisor's) maths, not gopsutil's: see statfsUsage.
package monitor
