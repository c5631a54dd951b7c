package main

import (
	"fmt"
	"reflect"
	"strings"
	"time"

	"github.com/spf13/pflag"

	"github.com/evictguard/evictguard/config"
)

// One source per setting: a flag that has a configuration-file key is bound to that key's
// field of a config.Configuration, whose defaults (config.Default) are the flag's default,
// and the flag carries its key as an annotation. Loading the file then replaces the values
// of every key whose flag the user did not set (overlay), so a set flag wins over the file
// and the file over the default, with no list of settings kept anywhere else.

// keyAnnotation is the pflag annotation that names a flag's file key.
const keyAnnotation = "evictguard.dev/config-key"

// binder registers flags bound to fields of a configuration, defaulting to their current
// values.
type binder struct{ fs *pflag.FlagSet }

func (b binder) key(name, key string) {
	if err := b.fs.SetAnnotation(name, keyAnnotation, []string{key}); err != nil {
		panic(err) // the flag was just registered
	}
}

func (b binder) str(p *string, key, name, usage string) {
	b.fs.StringVar(p, name, *p, usage)
	b.key(name, key)
}

func (b binder) dur(p *time.Duration, key, name, usage string) {
	b.fs.DurationVar(p, name, *p, usage)
	b.key(name, key)
}

// strs is a repeatable flag (--log-dir A --log-dir B).
func (b binder) strs(p *[]string, key, name, usage string) {
	b.fs.StringArrayVar(p, name, *p, usage)
	b.key(name, key)
}

// list is a comma-separated flag (--reclaim ballast,gc).
func (b binder) list(p *[]string, key, name, usage string) {
	b.fs.StringSliceVar(p, name, *p, usage)
	b.key(name, key)
}

func (b binder) boolean(p *bool, key, name, usage string) {
	b.fs.BoolVar(p, name, *p, usage)
	b.key(name, key)
}

func (b binder) integer(p *int, key, name, usage string) {
	b.fs.IntVar(p, name, *p, usage)
	b.key(name, key)
}

func (b binder) float(p *float64, key, name, usage string) {
	b.fs.Float64Var(p, name, *p, usage)
	b.key(name, key)
}

// flagKey is the file key a flag is bound to ("" for a flag without one).
func flagKey(f *pflag.Flag) string {
	if k := f.Annotations[keyAnnotation]; len(k) == 1 {
		return k[0]
	}
	return ""
}

// keyFlag is the flag bound to a file key, if fs has one.
func keyFlag(fs *pflag.FlagSet, key string) *pflag.Flag {
	var found *pflag.Flag
	fs.VisitAll(func(f *pflag.Flag) {
		if flagKey(f) == key {
			found = f
		}
	})
	return found
}

// overlay returns a copy of file with the value of every key whose flag was set on the
// command line taken from cur (the configuration the flags are bound to, or one that
// already holds their values).
func overlay(file, cur *config.Configuration, fs *pflag.FlagSet) (*config.Configuration, error) {
	next := *file
	var err error
	fs.Visit(func(f *pflag.Flag) {
		if key := flagKey(f); key != "" && err == nil {
			err = copyKey(&next, cur, key)
		}
	})
	return &next, err
}

// copyKey sets the field of dst at key (JSON names, dotted) to src's.
func copyKey(dst, src *config.Configuration, key string) error {
	d, err := fieldAt(reflect.ValueOf(dst).Elem(), key)
	if err != nil {
		return err
	}
	s, err := fieldAt(reflect.ValueOf(src).Elem(), key)
	if err != nil {
		return err
	}
	d.Set(s)
	return nil
}

// fieldAt walks v by JSON field names.
func fieldAt(v reflect.Value, key string) (reflect.Value, error) {
	for _, name := range strings.Split(key, ".") {
		t := v.Type()
		found := false
		for i := range t.NumField() {
			if tag, _, _ := strings.Cut(t.Field(i).Tag.Get("json"), ","); tag == name {
				v, found = v.Field(i), true
				break
			}
		}
		if !found {
			return reflect.Value{}, fmt.Errorf("configuration key %q: no field %q in %s", key, name, t)
		}
	}
	return v, nil
}
