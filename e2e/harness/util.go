package harness

import "runtime"

func callerFile() (int, string) {
	_, file, line, _ := runtime.Caller(0)
	return line, file
}

func goarch() string { return runtime.GOARCH }
