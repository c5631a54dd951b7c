// Package journal is evictguard's record of every change it makes to a node: one JSON file
// per operation under <state dir>/journal, saved atomically after every step, the backups of
// the files an operation wrote (<state dir>/backups), and the log of kubelet restarts that
// cooldowns and the daily budget count (<state dir>/restarts.json). A crash at any step
// leaves the record a resumption or a rollback starts from.
//
// It reads and writes only under the state directory of the host root it is given, and the
// node files an operation changes through Journal.WriteFile, which backs them up first.
package journal
