package migration

import (
	"slices"
	"testing"
)

func TestWithSocketUnits(t *testing.T) {
	tests := []struct {
		name  string
		units []string
		want  []string
	}{
		{"docker default", []string{"docker.socket", "docker.service"}, []string{"docker.socket", "docker.service"}},
		{"service only", []string{"docker.service"}, []string{"docker.socket", "docker.service"}},
		{"containerd", []string{"containerd.service"}, []string{"containerd.socket", "containerd.service"}},
		{"socket listed after", []string{"docker.service", "docker.socket"}, []string{"docker.service", "docker.socket"}},
		{"not a service", []string{"runtime.target"}, []string{"runtime.target"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := withSocketUnits(tc.units); !slices.Equal(got, tc.want) {
				t.Errorf("got %v, want %v", got, tc.want)
			}
		})
	}
}

// TestMigrationUnitOrder: sockets stop before services (nothing can activate the runtime
// again), start before them, and only if they were active; services always start.
func TestMigrationUnitOrder(t *testing.T) {
	tests := []struct {
		name         string
		units        []string
		active       map[string]bool // known units; value: active before the stop
		kubelet      bool
		wantStop     []string
		wantStartRun []string
	}{
		{
			name:         "socket-activated docker",
			units:        []string{"docker.socket", "docker.service"},
			active:       map[string]bool{"kubelet.service": true, "docker.socket": true, "docker.service": true},
			kubelet:      true,
			wantStop:     []string{"kubelet.service", "docker.socket", "docker.service"},
			wantStartRun: []string{"docker.socket", "docker.service"},
		},
		{
			name:         "idle socket-activated service is started",
			units:        []string{"docker.socket", "docker.service"},
			active:       map[string]bool{"docker.socket": true, "docker.service": false},
			wantStop:     []string{"docker.socket", "docker.service"},
			wantStartRun: []string{"docker.socket", "docker.service"},
		},
		{
			name:         "inactive socket stays stopped",
			units:        []string{"docker.socket", "docker.service"},
			active:       map[string]bool{"docker.socket": false, "docker.service": true},
			wantStop:     []string{"docker.socket", "docker.service"},
			wantStartRun: []string{"docker.service"},
		},
		{
			name:         "no socket unit",
			units:        []string{"containerd.socket", "containerd.service"},
			active:       map[string]bool{"containerd.service": true},
			wantStop:     []string{"containerd.service"},
			wantStartRun: []string{"containerd.service"},
		},
		{
			name:         "socket listed last",
			units:        []string{"a.service", "b.service", "a.socket"},
			active:       map[string]bool{"a.service": true, "b.service": true, "a.socket": true},
			wantStop:     []string{"a.socket", "a.service", "b.service"},
			wantStartRun: []string{"a.socket", "b.service", "a.service"},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			m := &migration{o: Options{KubeletUnit: "kubelet.service"},
				s: &migrationState{Plan: Plan{Units: tc.units}, Active: tc.active, KubeletFound: tc.kubelet}}
			if got := m.stopOrder(); !slices.Equal(got, tc.wantStop) {
				t.Errorf("stop order %v, want %v", got, tc.wantStop)
			}
			if got := m.startOrder(); !slices.Equal(got, tc.wantStartRun) {
				t.Errorf("start order %v, want %v", got, tc.wantStartRun)
			}
		})
	}
}
