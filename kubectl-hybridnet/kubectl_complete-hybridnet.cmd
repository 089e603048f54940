@echo off
kubectl-hybridnet __complete %*
