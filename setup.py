"""Build hook: the wheel carries the committed contract artifacts (ABI + bytecode) as package
data of ``verifier`` (``verifier/contracts/*.json``), copied from ``contracts/artifacts/`` at
build time so there is one committed copy. Everything else is in pyproject.toml."""

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent
ARTIFACTS = ROOT / "contracts" / "artifacts"


class BuildWithArtifacts(build_py):
    """build_py, plus the contract artifacts under verifier/contracts/ in the build."""

    def run(self) -> None:
        super().run()
        artifacts = sorted(ARTIFACTS.glob("*.json"))
        if not artifacts:  # never build a wheel that cannot find its contracts
            raise RuntimeError(f"no contract artifacts in {ARTIFACTS} (MANIFEST.in ships them)")
        target = Path(self.build_lib) / "verifier" / "contracts"
        target.mkdir(parents=True, exist_ok=True)
        for artifact in artifacts:
            shutil.copyfile(artifact, target / artifact.name)


setup(cmdclass={"build_py": BuildWithArtifacts})
