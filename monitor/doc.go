// Package monitor decides which filesystem is nodefs, imagefs, containerfs and the log
// directories, samples their bytes and inodes with statfs (through gopsutil), evaluates every
// eviction signal against its effective threshold, and predicts the time to each threshold.
//
// It reads, under a host root: statfs of the kubelet root dir, the runtime's data root and
// the log directories; the runtime's configuration (daemon.json, containerd config.toml) and,
// when their sockets answer, the runtime APIs. It writes nothing on the host.
package monitor
