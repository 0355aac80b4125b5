package bench

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"runtime"
	"runtime/pprof"
)

// StartProfiles starts the CPU profile and the block profile of this
// process that the file names ask for (none for an empty name); stop ends
// them and writes their files.
func StartProfiles(cpuProfile, blockProfile string) (stop func() error, err error) {
	var stops []func() error
	stop = func() error {
		var errs []error
		for i := len(stops) - 1; i >= 0; i-- {
			errs = append(errs, stops[i]())
		}
		return errors.Join(errs...)
	}
	if cpuProfile != "" {
		f, err := os.Create(cpuProfile)
		if err != nil {
			return nil, fmt.Errorf("bench: cpu profile: %w", err)
		}
		stops = append(stops, func() error {
			if cerr := f.Close(); cerr != nil {
				return fmt.Errorf("bench: cpu profile: %w", cerr)
			}
			return nil
		})
		if err := pprof.StartCPUProfile(f); err != nil {
			return nil, errors.Join(fmt.Errorf("bench: cpu profile: %w", err), stop())
		}
		stops = append(stops, func() error { pprof.StopCPUProfile(); return nil })
	}
	if blockProfile != "" {
		// Waits of 100µs and more: enough to see what serializes requests.
		runtime.SetBlockProfileRate(100_000)
		runtime.SetMutexProfileFraction(10)
		stops = append(stops, func() error {
			f, ferr := os.Create(blockProfile)
			if ferr != nil {
				return fmt.Errorf("bench: block profile: %w", ferr)
			}
			defer f.Close()
			if werr := pprof.Lookup("block").WriteTo(f, 0); werr != nil {
				return fmt.Errorf("bench: block profile: %w", werr)
			}
			return nil
		})
	}
	return stop, nil
}

// writeHeapProfile writes a heap profile to path (after a GC, so it shows
// what is live); a failure is logged.
func writeHeapProfile(path string, logger *slog.Logger) {
	f, err := os.Create(path)
	if err == nil {
		runtime.GC()
		err = errors.Join(pprof.WriteHeapProfile(f), f.Close())
	}
	if err != nil {
		logger.Error("bench: heap profile", "error", err)
	}
}
