package main

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/tollgate/tollgate/config"
	"github.com/tollgate/tollgate/server"
)

// loadConfig loads the configuration from TOLLGATE_CONFIG and the environment.
func loadConfig() (*config.Config, error) {
	return config.LoadFromEnv(os.Getenv)
}

// newLogger is the process's JSON logger at TOLLGATE_LOG_LEVEL.
func newLogger(cfg *config.Config, w io.Writer) *slog.Logger {
	level := slog.LevelInfo
	switch strings.ToLower(cfg.Env.LogLevel) {
	case "debug":
		level = slog.LevelDebug
	case "warn":
		level = slog.LevelWarn
	case "error":
		level = slog.LevelError
	}
	return slog.New(slog.NewJSONHandler(w, &slog.HandlerOptions{Level: level})).With("instance", cfg.Env.InstanceID)
}

// runRoles runs the roles until ctx ends (SIGINT, SIGTERM) or a role
// stops, then closes them gracefully.
func runRoles(ctx context.Context, roles server.Roles, stderr io.Writer) error {
	cfg, err := loadConfig()
	if err != nil {
		return err
	}
	logger := newLogger(cfg, stderr)
	startCtx, cancel := context.WithTimeout(ctx, time.Minute)
	srv, err := server.Start(startCtx, server.Options{Config: cfg, Roles: roles, Logger: logger})
	cancel()
	if err != nil {
		return err
	}
	var runErr error
	select {
	case <-ctx.Done():
		logger.Info("shutting down")
	case runErr = <-srv.Err():
	}
	closeCtx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	return errors.Join(runErr, srv.Close(closeCtx))
}
